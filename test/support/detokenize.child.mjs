// Compares the engine addon's detokenizeAfter() with node-llama-cpp's LlamaModel.detokenize(tokens,
// special, context) on the bundled model, in its own process (run by test/engine-detokenize.e2e-spec.ts):
// prints one JSON line of what it saw.
import { bundledModel } from './bundled-model.mjs';

const { addon, model, context } = await bundledModel(process.argv[2]);
const native = context._ctx;
const vocab = model.tokens.bos === null ? 0 : model.fileInfo.metadata.tokenizer.ggml.tokens.length;

// A fixed-seed generator: the same trials every run.
let state = 0x9e3779b9;
const random = () => ((state = (Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32);
const pick = (n) => Math.floor(random() * n);

const result = { vocab, trials: 0, answered: 0, nulls: 0, mismatches: [], streamed: { tokens: 0, answered: 0, same: true } };
const ids = new Int32Array(16);
/** One comparison: the addon's answer, where it gives one, must be node-llama-cpp's text. */
function compare(tokens, ctx, special) {
  result.trials++;
  const c = Math.min(ctx.length, 3);
  for (let i = 0; i < c; i++) ids[i] = ctx[ctx.length - c + i];
  tokens.forEach((t, i) => (ids[c + i] = t));
  const fast = addon.detokenizeAfter(native, ids, c, tokens.length, special);
  if (fast === null) {
    result.nulls++;
    return null;
  }
  result.answered++;
  const expected = model.detokenize(tokens, special, ctx);
  if (fast !== expected && result.mismatches.length < 5) result.mismatches.push({ tokens, ctx, special, fast, expected });
  return fast === expected;
}

// Random tokens of the whole vocabulary (control, byte-fallback and text tokens alike).
for (let trial = 0; trial < 4000; trial++) {
  const ctx = Array.from({ length: pick(9) }, () => pick(vocab));
  const tokens = Array.from({ length: 1 + (random() < 0.2 ? pick(4) : 0) }, () => pick(vocab));
  compare(tokens, ctx, random() < 0.5);
}
// A text streamed token by token as the server's TokenTextDecoder does (the last eight as context).
const text = 'Once upon a time, a little girl named Lily said "hello!" to a café owner — naïve, 日本, 🙂.\nThe end.';
const streamed = model.tokenize(text);
for (let i = 0; i < streamed.length; i++) {
  result.streamed.tokens++;
  const same = compare([streamed[i]], streamed.slice(Math.max(0, i - 8), i), false);
  if (same !== null) result.streamed.answered++;
  if (same === false) result.streamed.same = false;
}
// Out-of-range ids and bad arguments.
result.outOfRange = addon.detokenizeAfter(native, Int32Array.from([1, vocab + 5]), 1, 1, false);
try {
  addon.detokenizeAfter(native, Int32Array.from([1]), 1, 1, false);
  result.overrun = 'no error';
} catch (err) {
  result.overrun = err.constructor.name;
}
console.log(JSON.stringify(result));
