// The engine addon and node-llama-cpp on the bundled model, as the child processes of the engine
// tests use them (test/support/*.child.mjs): CPU only, no build, one sequence of 256 tokens on one
// thread unless asked otherwise.
import { createRequire } from 'node:module';
import { join } from 'node:path';

/** Loads the addon built by npm ci under `root`, and the bundled model with one context. */
export async function bundledModel(root, contextOptions = { sequences: 1, contextSize: 256, threads: 1 }) {
  const require = createRequire(import.meta.url);
  const addon = require(join(root, 'libs', 'inference', 'native', 'build', 'Release', 'llm_engine.node'));
  const { getLlama } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
  const model = await llama.loadModel({ modelPath: join(root, 'models', 'stories260K.gguf') });
  const context = await model.createContext(contextOptions);
  return { addon, llama, model, context };
}
