// What one decode step costs by the layout of its sequences, on the engine addon's own step()
// (node scripts/bench-step-layouts.mjs [model.gguf] [threads] [repetitions]): node-llama-cpp's
// contexts keep one KV stream per sequence, and llama.cpp then cuts a step into one micro-batch
// per run of consecutive sequence ids. Measured with the hole filling of the addon off and on
// (ENGINE_GAP_FILL), and with it on and decode steps of 5-7 tokens padded to 8 (setDecodePad, the
// thread policy's pad variants; the padded tokens are counted). Every sequence first holds 100 tokens; each step is undone after it is timed
// (its cells removed), and the layouts are taken in turn so that a slow spell weighs on all.
// Prints the median compute time of each layout.
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeStepContext, openStepContext } from './engine-step-context.mjs';

const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const modelPath = resolve(process.argv[2] ?? join(root, 'models', 'synth-110m.gguf'));
const threads = Number(process.argv[3] ?? 2);
const reps = Number(process.argv[4] ?? 25);
const require = createRequire(import.meta.url);
const addon = require(join(root, 'libs', 'inference', 'native', 'build', 'Release', 'llm_engine.node'));
const { getLlama } = await import('node-llama-cpp');

const SEQUENCES = 8;
const CACHED = 100;
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
const model = await llama.loadModel({ modelPath });
const stepContext = await openStepContext(addon, llama, model, { sequences: SEQUENCES, contextSize: SEQUENCES * 1024, threads });
const { native, sampler } = stepContext;

/** One step of `items` ([sequence, tokens]), the last token of each sampled; returns its decode ms. */
async function step(items, position) {
  const spec = Int32Array.from(
    items.flatMap(([seq, n]) => [seq, position[seq], n, 1, ...Array.from({ length: n }, (_, t) => 100 + ((seq * 31 + t * 7) % 1000))]),
  );
  const out = new Int32Array(items.length);
  const info = new Int32Array(3);
  const ms = await addon.step(native, spec, items.map(() => sampler), out, undefined, undefined, undefined, undefined, info);
  return { ms, padded: info[2] ? info[0] : 0 };
}

// Fill every sequence, then time layouts at positions CACHED.. (each step's cells removed again).
const position = Array(SEQUENCES).fill(0);
for (let seq = 0; seq < SEQUENCES; seq++) {
  await step([[seq, CACHED]], position);
  position[seq] = CACHED;
}
const contiguous = (from, n) => Array.from({ length: n }, (_, i) => [from + i, 1]);
const layouts = [
  ...[1, 2, 3, 4, 5, 6, 7, 8].map((n) => ({ name: `${n} decode tokens, sequences 0-${n - 1}`, items: contiguous(0, n) })),
  { name: '7 decode tokens, sequences 1-7', items: contiguous(1, 7) },
  { name: '5 decode tokens, sequences 2-6', items: contiguous(2, 5) },
  { name: '7 decode tokens, a hole at 3', items: [0, 1, 2, 4, 5, 6, 7].map((s) => [s, 1]) },
  { name: '6 decode tokens, holes at 2 and 5', items: [0, 1, 3, 4, 6, 7].map((s) => [s, 1]) },
  { name: '5 decode tokens, a hole at 2', items: [0, 1, 3, 4, 5].map((s) => [s, 1]) },
  { name: '2 decode tokens, sequences 0 and 7', items: [[0, 1], [7, 1]] },
  { name: '38-token prompt alone', items: [[3, 38]] },
  ...[2, 4, 8].map((n) => ({ name: `${n} 38-token prompts, sequences 0-${n - 1}`, items: Array.from({ length: n }, (_, i) => [i, 38]) })),
  { name: '2 38-token prompts, sequences 0 and 2', items: [[0, 38], [2, 38]] },
  { name: 'prompts of 38 and 41 tokens, sequences 0-1', items: [[0, 38], [1, 41]] },
  { name: '4 prompts of 36-41 tokens, sequences 0-3', items: [[0, 38], [1, 41], [2, 36], [3, 39]] },
  { name: '7 decode tokens + a 38-token prompt at 3', items: [[0, 1], [1, 1], [2, 1], [3, 38], [4, 1], [5, 1], [6, 1], [7, 1]] },
  { name: '6 decode + a 38-token prompt at 4, a hole at 3', items: [[0, 1], [1, 1], [2, 1], [4, 38], [5, 1], [6, 1], [7, 1]] },
];
const settings = [
  { name: 'off', fill: 0, pad: 0 },
  { name: 'fill', fill: 1, pad: 0 },
  { name: 'pad', fill: 1, pad: 8 },
];
const times = new Map(layouts.flatMap((l) => settings.map((s) => [`${l.name}|${s.name}`, []])));
const padded = new Map();
for (let r = 0; r < reps + 2; r++) {
  for (const layout of layouts) {
    for (const s of settings) {
      addon.setGapFill(s.fill);
      addon.setDecodePad(native, s.pad);
      const { ms, padded: n } = await step(layout.items, position);
      for (const [seq] of layout.items) native.removeTokenCellsFromSequence(seq, CACHED, -1);
      if (s.pad) padded.set(layout.name, n);
      if (r >= 2) times.get(`${layout.name}|${s.name}`).push(ms);
    }
  }
}
addon.setDecodePad(native, 0);
const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
console.log(`${modelPath.split('/').pop()}, ${threads} threads, ${SEQUENCES} sequences of ${CACHED} cached tokens, median of ${reps} steps each (ms of llama_decode):`);
console.log('| layout | hole filling off | on (ENGINE_GAP_FILL=1) | on, padded to 8 (setDecodePad) |');
console.log('|---|---|---|---|');
const versus = (ms, base) => `${ms.toFixed(2)}${Math.abs(ms - base) / base > 0.05 ? ` (${ms < base ? '−' : '+'}${Math.round((Math.abs(ms - base) / base) * 100)}%)` : ''}`;
for (const layout of layouts) {
  const off = median(times.get(`${layout.name}|off`));
  const on = median(times.get(`${layout.name}|fill`));
  const pad = median(times.get(`${layout.name}|pad`));
  const n = padded.get(layout.name);
  console.log(`| ${layout.name} | ${off.toFixed(2)} | ${versus(on, off)} | ${n ? `${versus(pad, on)}, ${n} throwaway token${n === 1 ? '' : 's'}` : '(not padded)'} |`);
}
addon.setGapFill(1);
await closeStepContext(addon, stepContext);
await model.dispose();
await llama.dispose();
