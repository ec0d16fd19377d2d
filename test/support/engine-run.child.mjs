// Drives the engine addon's run() directly on the bundled model, in its own process (run by
// test/engine-run.e2e-spec.ts): prints one JSON line of what it saw, then lets the process end by
// itself. A handle the addon left open would keep the process alive (the test then times out).
import { bundledModel } from './bundled-model.mjs';

const { addon, llama, model, context } = await bundledModel(process.argv[2]);
// Held for the process's life: node-llama-cpp disposes a sequence (erasing its KV cells, from
// this thread, even mid-run) once its object is garbage-collected.
const sequence = context.getSequence();
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

/** A context of `n` sequences (default four) with the addon's pool and a greedy sampler per sequence; close() frees it all. */
async function sequencesContext(n = 4) {
  const ctx = await model.createContext({ sequences: n, contextSize: n * 128, threads: 1 });
  // Held until close(), which refers to them (see the first context).
  const sequences = Array.from({ length: n }, () => ctx.getSequence());
  const native = ctx._ctx;
  addon.attachThreadpool(native, 1, 0, 1);
  const samplers = Array.from({ length: n }, () => {
    const s = new llama._bindings.AddonSampler(model._model);
    s.applyConfig({});
    return s;
  });
  const close = async () => {
    addon.release(native);
    addon.detachThreadpool(native);
    for (const s of samplers) s.dispose?.();
    await ctx.dispose();
    sequences.length = 0;
  };
  return { native, samplers, close };
}
/** BOS (when the model wants one) and the text's tokens. */
const promptOf = (text) => (bos === null ? [] : [bos]).concat(model.tokenize(text));

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

// 5. Holes between busy sequences (setGapFill): with per-sequence KV streams llama.cpp splits a
//    step at a hole; a throwaway token of the idle sequence closes it and is removed after the
//    decode. Four sequences; 0 and 2 (and then 0 and 3) decode while the others hold a prompt.
{
  const { native: gapNative, samplers, close } = await sequencesContext();
  const prompts = ['Once upon a time', 'The little dog', 'A big red ball', 'Tom and Sue'].map(promptOf);
  const stepOnce = async (items) => {
    const spec = Int32Array.from(items.flatMap((it) => [it.seq, it.position, it.tokens.length, 1, ...it.tokens]));
    const out = new Int32Array(items.length).fill(-1);
    await addon.step(gapNative, spec, items.map((it) => samplers[it.seq]), out);
    return [...out];
  };
  /** Prompts in all four, then `steps` steps of `busy` only, then each idle one goes on alone. */
  const scenario = async (fill, busy, steps) => {
    addon.setGapFill(fill);
    const before = addon.setGapFill();
    for (let i = 0; i < 4; i++) gapNative.disposeSequence(i);
    const next = await stepOnce(prompts.map((tokens, seq) => ({ seq, position: 0, tokens })));
    const position = prompts.map((p) => p.length);
    const busyTokens = [];
    const idleMax = [];
    for (let k = 0; k < steps; k++) {
      const sampled = await stepOnce(busy.map((seq) => ({ seq, position: position[seq]++, tokens: [next[seq]] })));
      busy.forEach((seq, i) => (next[seq] = sampled[i]));
      busyTokens.push(sampled);
      idleMax.push([0, 1, 2, 3].filter((s) => !busy.includes(s)).map((s) => gapNative.getSequenceKvCacheMaxPosition(s)));
    }
    const idleNext = [];
    for (const seq of [0, 1, 2, 3].filter((s) => !busy.includes(s))) {
      idleNext.push(...(await stepOnce([{ seq, position: position[seq], tokens: [next[seq]] }])));
    }
    return { busyTokens, idleMax, idleNext, promptLengths: prompts.map((p) => p.length), added: addon.setGapFill() - before };
  };
  result.gapFill = {
    off: await scenario(0, [0, 2], 4),
    on: await scenario(1, [0, 2], 4),
    wideOff: await scenario(0, [0, 3], 3),
    wideOne: await scenario(1, [0, 3], 3),
    wideTwo: await scenario(2, [0, 3], 3),
  };
  addon.setGapFill(1);
  await close();
}

// 6. Prompts fed to a running loop (feed()) with setPromptAlone: the step that takes the first
//    in holds the generating sequence back (reported as `held`), the next one takes it whatever
//    is fed; a prompt taken right after a step that evaluated one holds nothing back. Four
//    sequences: 0 generates from the start; 1, 2 and 3 are fed together after its third report,
//    one a step (pack limit 1).
{
  const { native: feedNative, samplers, close } = await sequencesContext();
  const prompts = ['The little dog', 'A big red ball', 'Tom and Sue'].map(promptOf);
  const scenario = async (alone) => {
    addon.setPromptAlone(feedNative, alone);
    for (let i = 0; i < 4; i++) feedNative.disposeSequence(i);
    const steps = [];
    await addon.run(feedNative, spec(), [samplers[0]], plan(12), (layout, computeMs, threads, doneAt, final, lpTokens, lpValues, filled, held) => {
      const items = [];
      for (let i = 0; i < layout.length; i += 4) items.push({ seq: layout[i], position: layout[i + 1], count: layout[i + 2], sampled: layout[i + 3] });
      steps.push({ items, held });
      if (steps.length === 3) {
        const spec = Int32Array.from(prompts.flatMap((p, k) => [k + 1, 0, p.length, 1, ...p]));
        steps[2].fed = addon.feed(feedNative, spec, samplers.slice(1), Int32Array.from([6, 0, 6, 0, 6, 0]), 1);
      }
    });
    const tokensOf = (seq) => steps.flatMap((s) => s.items.filter((it) => it.seq === seq).map((it) => it.sampled));
    return { steps, tokens: [0, 1, 2, 3].map(tokensOf), setting: addon.setPromptAlone(feedNative), other: addon.setPromptAlone(native) };
  };
  result.promptAlone = { on: await scenario(true), off: await scenario(false) };
  await close();
}

// 7. setDrainPack: three prompts fed together (pack limit 1) while sequence 0 generates. With
//    its budget nearly spent (it ends within three steps), the step that takes them in takes all
//    three; with many tokens left, or with the setting off, one a step.
{
  const { native: drainNative, samplers, close } = await sequencesContext();
  const prompts = ['The little dog', 'A big red ball', 'Tom and Sue'].map(promptOf);
  const scenario = async (drain, budget) => {
    addon.setPromptAlone(drainNative, false);
    addon.setDrainPack(drainNative, drain);
    for (let i = 0; i < 4; i++) drainNative.disposeSequence(i);
    const steps = [];
    await addon.run(drainNative, spec(), [samplers[0]], plan(budget), (layout) => {
      const items = [];
      for (let i = 0; i < layout.length; i += 4) items.push({ seq: layout[i], position: layout[i + 1], count: layout[i + 2], sampled: layout[i + 3] });
      steps.push({ items, held: 0 });
      if (steps.length === 2) {
        const spec = Int32Array.from(prompts.flatMap((p, k) => [k + 1, 0, p.length, 1, ...p]));
        steps[1].fed = addon.feed(drainNative, spec, samplers.slice(1), Int32Array.from([4, 0, 4, 0, 4, 0]), 1);
      }
    });
    const tokensOf = (seq) => steps.flatMap((s) => s.items.filter((it) => it.seq === seq).map((it) => it.sampled));
    return { steps, tokens: [0, 1, 2, 3].map(tokensOf), setting: addon.setDrainPack(drainNative), other: addon.setDrainPack(native) };
  };
  result.drainPack = { on: await scenario(true, 5), long: await scenario(true, 40), off: await scenario(false, 5) };
  await close();
}

// 8. setDecodeSplit: a step of two to four one-token items runs as one decode per item, reported
//    as split; prompt steps and one-item steps never are. Four prompts with budgets 7, 6, 4 and
//    2: the steps after the prompts carry four, three, then two items, and the last one one.
//    The same tokens and log-probabilities either way; step() reports it in info[1].
{
  const { native: splitNative, samplers, close } = await sequencesContext();
  const prompts = ['Once upon a time', 'The little dog', 'A big red ball', 'Tom and Sue'].map(promptOf);
  const scenario = async (split) => {
    const setting = addon.setDecodeSplit(splitNative, split);
    for (let i = 0; i < 4; i++) splitNative.disposeSequence(i);
    const steps = [];
    const spec = Int32Array.from(prompts.flatMap((p, k) => [k, 0, p.length, 1, ...p]));
    const top = Int32Array.from([2, 2, 2, 2]);
    await addon.run(
      splitNative,
      spec,
      samplers,
      Int32Array.from([7, 0, 6, 0, 4, 0, 2, 0]),
      (layout, computeMs, threads, doneAt, final, lpTokens, lpValues, filled, held, didSplit) => {
        const items = [];
        for (let i = 0; i < layout.length; i += 4) items.push({ seq: layout[i], count: layout[i + 2], sampled: layout[i + 3] });
        const logprobs = items.map((_, k) => [lpTokens[k * 20], lpTokens[k * 20 + 1], lpValues[k * 21], lpValues[k * 21 + 1], lpValues[k * 21 + 2]]);
        steps.push({ items, split: didSplit, logprobs });
      },
      spec.length,
      top,
    );
    // step() with two one-token items, sequences 1 and 3 after the run.
    const next = [1, 3].map((seq) => ({ seq, position: splitNative.getSequenceKvCacheMaxPosition(seq) + 1, token: steps.at(-1).items[0].sampled }));
    const stepSpec = Int32Array.from(next.flatMap((it) => [it.seq, it.position, 1, 1, it.token]));
    const out = new Int32Array(2).fill(-1);
    const info = new Int32Array(2).fill(-1);
    await addon.step(splitNative, stepSpec, [samplers[1], samplers[3]], out, stepSpec.length, undefined, undefined, undefined, info);
    return { setting, steps, tokens: [0, 1, 2, 3].map((seq) => steps.flatMap((s) => s.items.filter((it) => it.seq === seq).map((it) => it.sampled))), step: { out: [...out], split: info[1] } };
  };
  result.decodeSplit = { on: await scenario(true), off: await scenario(false), other: addon.setDecodeSplit(native) };
  await close();
}

// 9. setDecodePad: a decode step of five to seven one-token items in one run is padded to eight
//    tokens with throwaway ones on the idle sequences beside it (after its last, then before its
//    first), whose cells are removed after the decode. Eight sequences; prompts in 0-6 with
//    budgets 5, 5, 5, 5, 5, 3 and 2: after the prompt step (not padded), steps of seven, six,
//    five and five items. The same tokens and log-probabilities either way; the idle sequences'
//    cells end where they did. step() with seven items on 1-7 pads before them (sequence 0).
{
  const { native: padNative, samplers, close } = await sequencesContext(8);
  const texts = ['Once upon a time', 'The little dog', 'A big red ball', 'Tom and Sue', 'The sun was', 'Lily saw a', 'One day a'];
  const prompts = texts.map(promptOf);
  const scenario = async (width) => {
    const setting = addon.setDecodePad(padNative, width);
    for (let i = 0; i < 8; i++) padNative.disposeSequence(i);
    const steps = [];
    const spec = Int32Array.from(prompts.flatMap((p, k) => [k, 0, p.length, 1, ...p]));
    const top = Int32Array.from(prompts.map(() => 2));
    await addon.run(
      padNative,
      spec,
      samplers.slice(0, 7),
      Int32Array.from([5, 0, 5, 0, 5, 0, 5, 0, 5, 0, 3, 0, 2, 0]),
      (layout, computeMs, threads, doneAt, final, lpTokens, lpValues, filled, heldBack, didSplit, padTo) => {
        const items = [];
        for (let i = 0; i < layout.length; i += 4) items.push({ seq: layout[i], count: layout[i + 2], sampled: layout[i + 3] });
        const logprobs = items.map((_, k) => [lpTokens[k * 20], lpTokens[k * 20 + 1], lpValues[k * 21], lpValues[k * 21 + 1], lpValues[k * 21 + 2]]);
        steps.push({ seqs: items.map((it) => it.seq), sampled: items.map((it) => it.sampled), filled, padTo, logprobs });
      },
      spec.length,
      top,
    );
    const idleMax = [5, 6, 7].map((seq) => padNative.getSequenceKvCacheMaxPosition(seq));
    // step(): sequences 1-7 decode one token each (7 has no cells: its prompt is one token).
    const items = [1, 2, 3, 4, 5, 6, 7].map((seq) => ({ seq, position: padNative.getSequenceKvCacheMaxPosition(seq) + 1 }));
    const stepSpec = Int32Array.from(items.flatMap((it) => [it.seq, it.position, 1, 1, 100 + it.seq]));
    const out = new Int32Array(7).fill(-1);
    const info = new Int32Array(3).fill(-1);
    await addon.step(padNative, stepSpec, samplers.slice(1), out, stepSpec.length, undefined, undefined, undefined, info);
    const after = [0, 1, 7].map((seq) => padNative.getSequenceKvCacheMaxPosition(seq));
    return { setting, steps, idleMax, step: { out: [...out], filled: info[0], padTo: info[2] }, after };
  };
  result.decodePad = { on: await scenario(8), off: await scenario(0), other: addon.setDecodePad(native) };
  // All or nothing: seven items on 0-6 padded to ten would need three idle neighbours, and only
  // sequence 7 is one; nothing is added.
  {
    addon.setDecodePad(padNative, 10);
    const items = [0, 1, 2, 3, 4, 5, 6].map((seq) => ({ seq, position: padNative.getSequenceKvCacheMaxPosition(seq) + 1 }));
    const stepSpec = Int32Array.from(items.flatMap((it) => [it.seq, it.position, 1, 1, 100 + it.seq]));
    const info = new Int32Array(3).fill(-1);
    await addon.step(padNative, stepSpec, samplers.slice(0, 7), new Int32Array(7), stepSpec.length, undefined, undefined, undefined, info);
    result.decodePad.short = { filled: info[0], padTo: info[2], seq7: padNative.getSequenceKvCacheMaxPosition(7) };
    addon.setDecodePad(padNative, 0);
  }
  await close();
}

addon.release(native);
addon.detachThreadpool(native);
await context.dispose();
await model.dispose();
await llama.dispose();
process.stdout.write(`${JSON.stringify(result)}\n`);
