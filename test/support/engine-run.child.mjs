// Drives the engine addon's run() directly on the bundled model, in its own process (run by
// test/engine-run.e2e-spec.ts): prints one JSON line of what it saw, then lets the process end by
// itself. A handle the addon left open would keep the process alive (the test then times out).
import { createRequire } from 'node:module';
import { join } from 'node:path';

const root = process.argv[2];
const require = createRequire(import.meta.url);
const addon = require(join(root, 'libs', 'inference', 'native', 'build', 'Release', 'llm_engine.node'));
const { getLlama } = await import('node-llama-cpp');

const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
const model = await llama.loadModel({ modelPath: join(root, 'models', 'stories260K.gguf') });
const context = await model.createContext({ sequences: 1, contextSize: 256, threads: 1 });
context.getSequence();
const native = context._ctx;
addon.attachThreadpool(native, 1, 0, 1);
const sampler = new llama._bindings.AddonSampler(model._model);
sampler.applyConfig({}); // greedy

const prompt = model.tokenize('Once upon a time');
const bos = model.tokens.bos;
const tokens = bos === null ? prompt : [bos, ...prompt];
const spec = () => Int32Array.from([0, 0, tokens.length, 1, ...tokens]);
const plan = (budget) => Int32Array.from([budget, 0]);

/** One run from position 0: every onStep's report, and what happens around it. */
async function run(budget, onStep) {
  native.disposeSequence(0); // the slot's KV cells from position 0 on
  return addon.run(native, spec(), [sampler], plan(budget), onStep);
}

const result = {};

// 1. Steps arrive in order, one event each: microtasks queued by a step's callback run before
//    the next step's callback (each step is its own entry into JavaScript).
{
  const seen = [];
  const steps = await run(8, (layout, computeMs, threads, doneAt, final) => {
    const i = seen.filter((s) => typeof s === 'object').length;
    seen.push({ position: layout[1], count: layout[2], sampled: layout[3], final, computeMs, doneAt });
    Promise.resolve().then(() => seen.push(`micro${i}`));
  });
  result.ordered = { steps, seen };
}

// 2. The same greedy run again gives the same tokens (the KV cells are overwritten from 0).
{
  const sampled = [];
  await run(8, (layout) => sampled.push(layout[3]));
  result.repeat = sampled;
}

// 3. A callback that throws: the run stops, no later step is reported, the promise rejects with
//    that very error.
{
  let calls = 0;
  const error = await run(64, () => {
    calls++;
    if (calls === 3) throw new Error('boom at step 3');
  }).then(
    () => null,
    (err) => err.message,
  );
  result.thrown = { calls, error };
}

// 4. interrupt() while a run goes on: it ends early, its last report says final or none does.
{
  let calls = 0;
  const steps = await run(200, () => {
    calls++;
    if (calls === 2) addon.interrupt(native);
  });
  result.interrupted = { steps, calls };
}

addon.release(native);
addon.detachThreadpool(native);
await context.dispose();
await model.dispose();
await llama.dispose();
process.stdout.write(`${JSON.stringify(result)}\n`);
