// What a prompt step and a decode step cost behind a long cached prefix, with flash attention on
// and off (node scripts/bench-prefix-depth.mjs [model.gguf] [threads] [repetitions]; DEPTHS, a
// comma list of cached tokens a sequence holds, default 100,1000,1500,3000; SUFFIX, the short
// prompt's tokens, default 18). Two contexts of eight sequences on the same model, one with flash
// attention and one without (the KV cache's layout differs, so it is chosen per context); every
// sequence of both is filled to each depth in turn, and each layout is timed on the engine addon's
// own step(), the two contexts taken in turn, its cells removed after it. Prints the median
// compute time of each layout (ms of llama_decode).
//
// Why: a short prompt behind a cached system prompt (a chat's next turn, a shared-prefix burst)
// is evaluated by ggml's CPU flash attention row by row over the whole cache when a sequence
// has fewer than 64 new tokens in the step (its tiled kernel needs 64), and the same rows cost
// a step of their own per sequence whether the prompts are packed or not.
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeStepContext, openStepContext } from './engine-step-context.mjs';

const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const modelPath = resolve(process.argv[2] ?? join(root, 'models', 'synth-110m.gguf'));
const threads = Number(process.argv[3] ?? 2);
const reps = Number(process.argv[4] ?? 9);
const depths = (process.env.DEPTHS ?? '100,1000,1500,3000').split(',').map(Number).sort((a, b) => a - b);
const suffix = Number(process.env.SUFFIX ?? 18);
const require = createRequire(import.meta.url);
const addon = require(join(root, 'libs', 'inference', 'native', 'build', 'Release', 'llm_engine.node'));
const { getLlama } = await import('node-llama-cpp');

const SEQUENCES = 8;
const perSequence = Math.ceil((depths[depths.length - 1] + 128) / 256) * 256;
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
const model = await llama.loadModel({ modelPath });
const sides = [];
for (const flashAttention of [true, false]) {
  const stepContext = await openStepContext(addon, llama, model, { sequences: SEQUENCES, contextSize: SEQUENCES * perSequence, threads, flashAttention });
  sides.push({ ...stepContext, name: flashAttention ? 'on' : 'off', position: Array(SEQUENCES).fill(0) });
}

/** One step of `items` ([sequence, tokens]) on `side`, the last token of each sampled; returns its decode ms. */
async function step(side, items) {
  const spec = Int32Array.from(
    items.flatMap(([seq, n]) => [seq, side.position[seq], n, 1, ...Array.from({ length: n }, (_, t) => 100 + ((seq * 31 + side.position[seq] + t * 7) % 1000))]),
  );
  const out = new Int32Array(items.length);
  const info = new Int32Array(3);
  return addon.step(side.native, spec, items.map(() => side.sampler), out, undefined, undefined, undefined, undefined, info);
}

const layouts = [
  { name: `a ${suffix}-token prompt alone`, items: [[3, suffix]] },
  ...[2, 4, 8].map((n) => ({ name: `${n} ${suffix}-token prompts in one step`, items: Array.from({ length: n }, (_, i) => [i, suffix]) })),
  { name: 'a 64-token prompt alone', items: [[3, 64]] },
  { name: 'a 128-token prompt chunk alone', items: [[3, 128]] },
  { name: '1 decode token', items: [[3, 1]] },
  { name: '8 decode tokens', items: Array.from({ length: SEQUENCES }, (_, i) => [i, 1]) },
];
const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
console.log(`${modelPath.split('/').pop()}, ${threads} threads, ${SEQUENCES} sequences, median of ${reps} steps each (ms of llama_decode), flash attention on / off:`);
console.log(`| cached tokens a sequence holds | ${layouts.map((l) => l.name).join(' | ')} |`);
console.log(`|---|${layouts.map(() => '---').join('|')}|`);
for (const depth of depths) {
  for (const side of sides) {
    for (let seq = 0; seq < SEQUENCES; seq++) {
      while (side.position[seq] < depth) {
        const n = Math.min(512, depth - side.position[seq]);
        await step(side, [[seq, n]]);
        side.position[seq] += n;
      }
    }
  }
  const times = new Map(sides.flatMap((s) => layouts.map((l) => [`${s.name}|${l.name}`, []])));
  for (let r = 0; r < reps + 1; r++) {
    for (const layout of layouts) {
      for (const side of sides) {
        const ms = await step(side, layout.items);
        for (const [seq] of layout.items) side.native.removeTokenCellsFromSequence(seq, depth, -1);
        // The first round meets graph allocation for each layout.
        if (r > 0) times.get(`${side.name}|${layout.name}`).push(ms);
      }
    }
  }
  const cell = (layout) => {
    const on = median(times.get(`on|${layout.name}`));
    const off = median(times.get(`off|${layout.name}`));
    const fmt = (ms, other) => (ms < other * 0.95 ? `**${ms.toFixed(1)}**` : ms.toFixed(1));
    return `${fmt(on, off)} / ${fmt(off, on)}`;
  };
  console.log(`| ${depth} | ${layouts.map(cell).join(' | ')} |`);
}
for (const side of sides) await closeStepContext(addon, side);
await model.dispose();
await llama.dispose();
