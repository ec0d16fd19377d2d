#!/usr/bin/env node
// What another thread's CPU costs a CPU server's token rate: streams from a running server
// (this one or llama-server: any OpenAI-compatible /v1/completions) with a closed loop of clients,
// while a child process that wakes every --period-ms and spins --burn-ms (a stand-in for Node's
// main thread, which takes the tokens of every step) is stopped and resumed every second
// (SIGSTOP / SIGCONT). The tokens that arrive in each half are counted, so a VM's slow and fast
// spells fall on both alike. Prints tok/s with the burner running and stopped, their ratio, and
// the burner's share of one core. docs/PERFORMANCE.md (2026-12-03, late) has what it measured.
//
//   node scripts/cpu-tax-probe.mjs --url http://127.0.0.1:8401 [--clients 8] [--seconds 60]
//        [--period-ms 35] [--burn-ms 1.4] [--max-tokens 256] [--api-key KEY] [--model NAME]
//
// Measurement only: not used by the product or its tests.
import { spawn } from 'node:child_process';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? args[at + 1] : fallback;
};
const url = opt('url');
if (!url) {
  console.error('usage: node scripts/cpu-tax-probe.mjs --url http://127.0.0.1:PORT [--clients 8] [--seconds 60] [--period-ms 35] [--burn-ms 1.4]');
  process.exit(2);
}
const clients = Number(opt('clients', 8));
const seconds = Number(opt('seconds', 60));
const periodMs = Number(opt('period-ms', 35));
const burnMs = Number(opt('burn-ms', 1.4));
const maxTokens = Number(opt('max-tokens', 256));
const apiKey = opt('api-key');
const model = opt('model');

const burner = spawn(process.execPath, ['-e', `setInterval(() => { const end = performance.now() + ${burnMs}; while (performance.now() < end); }, ${periodMs});`], { stdio: 'ignore' });
await new Promise((resolve) => setTimeout(resolve, 300));

let on = false;
const tokens = { on: 0, off: 0 };
const ms = { on: 0, off: 0 };
let last = performance.now();
/** Books the time since the last switch to the half that just ran. */
const book = () => {
  const now = performance.now();
  ms[on ? 'on' : 'off'] += now - last;
  last = now;
};
const flip = () => {
  book();
  on = !on;
  burner.kill(on ? 'SIGCONT' : 'SIGSTOP');
};
burner.kill('SIGSTOP');
const timer = setInterval(flip, 1000);
let stop = false;
setTimeout(() => (stop = true), seconds * 1000);

let id = 0;
async function request(i) {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, no-store', ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}) },
    body: JSON.stringify({ ...(model ? { model } : {}), prompt: `Once upon a time, request ${i}`, max_tokens: maxTokens, temperature: 0.8, top_p: 0.95, seed: i, ignore_eos: true, stream: true }),
  });
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body) {
    buffer += decoder.decode(chunk, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (event.startsWith('data: {')) tokens[on ? 'on' : 'off']++;
    }
  }
}
try {
  await Promise.all(Array.from({ length: clients }, async () => {
    while (!stop) await request(id++);
  }));
} finally {
  clearInterval(timer);
  book();
  burner.kill('SIGKILL');
}
const rateOn = (tokens.on / ms.on) * 1000;
const rateOff = (tokens.off / ms.off) * 1000;
console.log(
  `${clients} clients, burner ${burnMs} ms every ${periodMs} ms (${((100 * burnMs) / periodMs).toFixed(1)}% of a core): ` +
    `${rateOn.toFixed(1)} tok/s with it, ${rateOff.toFixed(1)} without, ratio ${(rateOn / rateOff).toFixed(3)}`,
);
