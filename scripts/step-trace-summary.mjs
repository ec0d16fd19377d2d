#!/usr/bin/env node
// Sums up an engine step trace by step shape: this server's STEP_TRACE_FILE (JSON lines) or
// llama-server's decode calls traced by scripts/llama-decode-trace.c ("start ms tokens logits").
//
//   node scripts/step-trace-summary.mjs <trace> [--skip N]
//
// Shapes: "8D" = a decode step of 8 streams; "1P+7D" = one prompt item and 7 decode streams
// (this server); llama-server's prompt steps show as "P, k logits" (its batch does not say how
// many prompts it holds, only how many rows want logits). Times are the engine's compute per step
// (llama_decode and its synchronisation), ms. --skip drops the first N steps (warm-up).
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith('--'));
const skipAt = args.indexOf('--skip');
const skip = skipAt >= 0 ? Number(args[skipAt + 1]) : 0;
if (!file) {
  console.error('usage: node scripts/step-trace-summary.mjs <trace> [--skip N]');
  process.exit(2);
}

const steps = [];
for (const line of readFileSync(file, 'utf8').split('\n')) {
  const text = line.replace(/\0/g, '').trim();
  if (!text) continue;
  if (text.startsWith('{')) {
    const s = JSON.parse(text);
    const prompts = s.prompts ?? 0;
    const decode = (s.sequences ?? 0) - prompts;
    steps.push({ shape: prompts > 0 ? `${prompts}P+${decode}D` : `${decode}D`, ms: s.computeMs ?? s.ms, tokens: s.tokens, hostMs: s.hostMs });
  } else {
    const [, ms, tokens, logits] = text.split(/\s+/).map(Number);
    if (!Number.isFinite(logits)) continue;
    steps.push({ shape: tokens === logits ? `${tokens}D` : `P, ${logits} logits`, ms, tokens });
  }
}
const kept = steps.slice(skip);
const total = kept.reduce((sum, s) => sum + s.ms, 0);
const tokens = kept.reduce((sum, s) => sum + s.tokens, 0);
const host = kept.filter((s) => typeof s.hostMs === 'number').map((s) => s.hostMs);
console.log(`${kept.length} steps, ${tokens} tokens, ${(total / 1000).toFixed(2)} s of compute` +
  (host.length ? `, host overhead ${(host.reduce((a, b) => a + b, 0) / host.length).toFixed(3)} ms a step (mean of ${host.length})` : ''));
const byShape = new Map();
for (const s of kept) (byShape.get(s.shape) ?? byShape.set(s.shape, []).get(s.shape)).push(s.ms);
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
console.log('shape           steps     mean   median      p90   total s  share');
for (const [shape, list] of [...byShape].sort((a, b) => b[1].reduce((x, y) => x + y, 0) - a[1].reduce((x, y) => x + y, 0))) {
  const sorted = [...list].sort((a, b) => a - b);
  const sum = list.reduce((a, b) => a + b, 0);
  console.log(`${shape.padEnd(14)} ${String(list.length).padStart(6)} ${(sum / list.length).toFixed(2).padStart(8)} ${pct(sorted, 0.5).toFixed(2).padStart(8)} ${pct(sorted, 0.9).toFixed(2).padStart(8)} ${(sum / 1000).toFixed(2).padStart(9)} ${((100 * sum) / total).toFixed(1).padStart(5)}%`);
}
