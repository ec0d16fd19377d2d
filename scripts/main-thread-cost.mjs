#!/usr/bin/env node
// CPU of a server's main thread per streamed token: one client streams --max-tokens answers from
// a running server on this machine (this one or llama-server: any OpenAI-compatible
// /v1/completions) back to back for --seconds, and the main thread's CPU time (user + system,
// /proc/<pid>/task/<pid>/schedstat) over that time is divided by the tokens received. For this
// server the main thread is Node's event loop (HTTP, the scheduler's bookkeeping, the streams'
// writes); llama-server's main thread is its decode loop, so its figure means something else.
// docs/PERFORMANCE.md (2026-12-04) has what it measured: the same work costs Node's thread about
// three times as much with the 110M model as with the bundled one.
//
//   node scripts/main-thread-cost.mjs --port 8000 [--seconds 8] [--max-tokens 256] [--api-key KEY]
//
// Linux only (reads /proc, where it also finds the listening process). Measurement only: not used
// by the product.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

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

/** The process holding a socket that listens on `port` (IPv4 or IPv6), from /proc; undefined if none. */
function listener(port) {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let lines = [];
    try {
      lines = readFileSync(table, 'utf8').trim().split('\n').slice(1);
    } catch {
      continue;
    }
    for (const line of lines) {
      const f = line.trim().split(/\s+/);
      // local_address is ADDR:PORT in hex; state 0A is LISTEN; the inode is the tenth field.
      if (f[1]?.endsWith(`:${hexPort}`) && f[3] === '0A') inodes.add(`socket:[${f[9]}]`);
    }
  }
  if (inodes.size === 0) return undefined;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds = [];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue; // gone, or not ours to read
    }
    for (const fd of fds) {
      try {
        if (inodes.has(readlinkSync(`/proc/${entry}/fd/${fd}`))) return Number(entry);
      } catch {
        /* closed meanwhile */
      }
    }
  }
  return undefined;
}

const pid = listener(port);
if (!pid) {
  console.error(`no process listens on port ${port}`);
  process.exit(1);
}
const mainCpuNs = () => Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]);

const headers = { 'content-type': 'application/json', 'cache-control': 'no-cache, no-store', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) };
let tokens = 0;
let requests = 0;
const started = performance.now();
const cpuBefore = mainCpuNs();
while (performance.now() - started < seconds * 1000) {
  const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
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
const cpuMs = (mainCpuNs() - cpuBefore) / 1e6;
console.log(
  `port ${port} (pid ${pid}): ${requests} requests, ${tokens} tokens in ${wall.toFixed(1)} s (${(tokens / wall).toFixed(0)} tok/s); ` +
    `main thread ${(cpuMs / wall).toFixed(1)} ms of CPU a second, ${tokens ? ((cpuMs * 1000) / tokens).toFixed(0) : '–'} µs a token`,
);
