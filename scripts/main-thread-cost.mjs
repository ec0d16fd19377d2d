#!/usr/bin/env node
// CPU of this server's main thread per streamed token: one client streams --max-tokens answers
// from a running server back to back for --seconds, and the main thread's CPU time over that time
// (user + system, the server's own llm_event_loop_cpu_seconds_total, read from /metrics before
// and after) is divided by the tokens received. The main thread is Node's event loop: HTTP, the
// scheduler's bookkeeping, the streams' writes.
// docs/PERFORMANCE.md (2026-12-04) has what it measured: the same work costs Node's thread about
// three times as much with the 110M model as with the bundled one.
//
//   node scripts/main-thread-cost.mjs --port 8000 [--seconds 8] [--max-tokens 256] [--api-key KEY]
//
// The counter exists on Linux (the server reads /proc). Measurement only: not used by the product.

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? args[at + 1] : fallback;
};
const port = Number(opt('port'));
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node scripts/main-thread-cost.mjs --port PORT [--seconds 8] [--max-tokens 256] [--api-key KEY]');
  process.exit(2);
}
const seconds = Number(opt('seconds', 8));
const maxTokens = Number(opt('max-tokens', 256));
const apiKey = opt('api-key', process.env.API_KEY ?? '');

const base = `http://127.0.0.1:${port}`;
const headers = { 'content-type': 'application/json', 'cache-control': 'no-cache, no-store', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) };
/**
 * The server's own count of its main thread's CPU (llm_event_loop_cpu_seconds_total, the figure
 * `bench serve` reads too), in seconds.
 */
async function mainCpuSeconds() {
  let res;
  try {
    res = await fetch(`${base}/metrics`, { headers });
  } catch (err) {
    console.error(`nothing answers on port ${port} (${err.cause?.code ?? err.message})`);
    process.exit(1);
  }
  const m = res.ok ? /^llm_event_loop_cpu_seconds_total ([0-9.eE+-]+)$/m.exec(await res.text()) : null;
  if (!m) {
    console.error(`${base}/metrics has no llm_event_loop_cpu_seconds_total (HTTP ${res.status}; this server on Linux only)`);
    process.exit(1);
  }
  return Number(m[1]);
}

let tokens = 0;
let requests = 0;
const started = performance.now();
const cpuBefore = await mainCpuSeconds();
while (performance.now() - started < seconds * 1000) {
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ prompt: `Story number ${requests} begins`, max_tokens: maxTokens, ignore_eos: true, stream: true, temperature: 0.8, seed: requests }),
  });
  if (!res.ok || !res.body) {
    console.error(`HTTP ${res.status}: ${await res.text()}`);
    process.exit(1);
  }
  requests++;
  const decoder = new TextDecoder();
  let pending = '';
  for await (const chunk of res.body) {
    pending += decoder.decode(chunk, { stream: true });
    const events = pending.split('\n\n');
    pending = events.pop() ?? '';
    for (const event of events) if (event.startsWith('data: {') && event.includes('"finish_reason":null')) tokens++;
  }
}
const wall = (performance.now() - started) / 1000;
const cpuMs = ((await mainCpuSeconds()) - cpuBefore) * 1000;
console.log(
  `port ${port}: ${requests} requests, ${tokens} tokens in ${wall.toFixed(1)} s (${(tokens / wall).toFixed(0)} tok/s); ` +
    `main thread ${(cpuMs / wall).toFixed(1)} ms of CPU a second, ${tokens ? ((cpuMs * 1000) / tokens).toFixed(0) : '–'} µs a token`,
);
