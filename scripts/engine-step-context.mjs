// A node-llama-cpp context driven step by step through the engine addon's own step(), for the
// step benchmarks (bench-step-layouts.mjs, bench-prefix-depth.mjs): its sequences held, a
// persistent threadpool of `threads` attached, one plain sampler. Measurement only.

/**
 * Opens a context of `sequences` sequences on `model` (contextOptions go to createContext as they
 * are, e.g. contextSize and flashAttention) and attaches the addon's threadpool to it.
 */
export async function openStepContext(addon, llama, model, { sequences, threads, ...contextOptions }) {
  const context = await model.createContext({ sequences, batchSize: 512, threads, ...contextOptions });
  // Held: node-llama-cpp erases a sequence's KV cells once its object is garbage-collected.
  const held = Array.from({ length: sequences }, () => context.getSequence());
  const native = context._ctx;
  addon.attachThreadpool(native, threads, 50, 0);
  addon.setThreads(native, threads, threads);
  const sampler = new llama._bindings.AddonSampler(model._model);
  sampler.applyConfig({});
  return { context, sequences: held, native, sampler };
}

/** Lets the addon go of the context, detaches its threadpool and disposes of it. */
export async function closeStepContext(addon, { context, native }) {
  addon.release(native);
  addon.detachThreadpool(native);
  await context.dispose();
}
