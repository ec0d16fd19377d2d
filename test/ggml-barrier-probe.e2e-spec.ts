import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * scripts/ggml-barrier-probe.c, preloaded into a real two-thread decode of the bundled model: it
 * recognises the pinned ggml build (it measures rather than forwards), counts the waits, and
 * leaves the output as it was, spinning or sleeping.
 */
// The probe knows the x86-64 builds' code (other machines' builds are only forwarded to).
(process.arch === 'x64' ? describe : describe.skip)('ggml barrier probe (scripts/ggml-barrier-probe.c)', () => {
  let dir: string;
  let probe: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'barrier-probe-e2e-'));
    probe = join(dir, 'probe.so');
    execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', '-o', probe, 'scripts/ggml-barrier-probe.c', '-ldl']);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // Eight greedy tokens on two threads through node-llama-cpp itself (its per-call threadpool), in
  // a process of its own with a plain environment, as the other process tests (Jest's would reach
  // it), from a file (node-llama-cpp forks a check of its binary with the parent's execArgv).
  const decode = () => {
    const script = join(dir, 'decode.mjs');
    const lib = pathToFileURL(resolve('node_modules/node-llama-cpp/dist/index.js')).href;
    writeFileSync(
      script,
      `const lib = await import(${JSON.stringify(lib)});
const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error, progressLogs: false });
const model = await llama.loadModel({ modelPath: ${JSON.stringify(resolve('models/stories260K.gguf'))} });
const context = await model.createContext({ contextSize: 256, threads: 2 });
const sequence = context.getSequence();
const out = [];
for await (const token of sequence.evaluate(model.tokenize('Once upon a time'), { temperature: 0 })) {
  out.push(token);
  if (out.length === 8) break;
}
console.log(JSON.stringify(out));
await llama.dispose();
`,
    );
    return script;
  };
  const run = (env: Record<string, string>): string =>
    execFileSync(process.execPath, [decode()], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, timeout: 60_000 }).trim();

  it('measures the waits of a real decode and changes nothing in its tokens, spinning or sleeping', () => {
    const plain = run({});
    expect(JSON.parse(plain)).toHaveLength(8);

    const spun = join(dir, 'spin.txt');
    expect(run({ LD_PRELOAD: probe, BARRIER_PROBE_FILE: spun })).toBe(plain);
    const report = readFileSync(spun, 'utf8');
    const head = /^ggml-barrier-probe: pid \d+: (\d+) waits, [\d.]+ ms in them; (\d+) of 128 us or more, [\d.]+ ms in those; (\d+) slept$/m.exec(report);
    expect(head).not.toBeNull();
    const [waits, , slept] = (head as RegExpExecArray).slice(1).map(Number);
    expect(waits).toBeGreaterThan(100);
    expect(slept).toBe(0);
    // The histogram's counts add up to the waits.
    const buckets = [...report.matchAll(/^ {2}(?:< |>=) *\d+ us: +(\d+) waits/gm)].map((m) => Number(m[1]));
    expect(buckets.reduce((a, b) => a + b, 0)).toBe(waits);

    const slept0 = join(dir, 'sleep.txt');
    expect(run({ LD_PRELOAD: probe, BARRIER_PROBE_FILE: slept0, BARRIER_SLEEP_AFTER_US: '0' })).toBe(plain);
    const sleeping = /(\d+) waits, .*; (\d+) slept$/m.exec(readFileSync(slept0, 'utf8')) as RegExpExecArray;
    expect(Number(sleeping[2])).toBeGreaterThan(0);
  });
});
