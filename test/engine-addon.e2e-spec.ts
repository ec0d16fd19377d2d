import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { metric, scrape } from './support/metrics';
import { ROOT, startServer, waitForModel } from './support/server-process';

const ADDON = join(ROOT, 'libs', 'inference', 'native', 'build', 'Release', 'llm_engine.node');
const KEY = 'sk-engine-test-0123456789abcdef';

async function complete(url: string, prompt: string): Promise<{ text: string; tokens: number }> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}`, 'Cache-Control': 'no-cache, no-store' },
    body: JSON.stringify({ prompt, max_tokens: 24, temperature: 0, ignore_eos: true }),
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { choices: { text: string }[]; usage: { completion_tokens: number } };
  return { text: body.choices[0].text, tokens: body.usage.completion_tokens };
}

/**
 * The engine addon (libs/inference/native, built by npm ci): the compiled server uses it by
 * default, and runs on node-llama-cpp's own decode path when it is missing or switched off.
 */
describe('engine addon', () => {
  it('is built by npm ci', () => {
    // CI runs `npm ci` on a fresh clone: its install step must have produced the addon.
    expect(existsSync(ADDON)).toBe(true);
  });

  it('the server starts with it, generates, and reports compute and per-step host overhead', async () => {
    const server = await startServer({ API_KEYS: KEY, THREADS: '2' });
    try {
      await waitForModel(server);
      const text = await scrape(server.url);
      expect(metric(text, 'llm_model_info', { engine: 'addon', threads: '2' })).toBe(1);
      const first = await complete(server.url, 'Once upon a time');
      expect(first.tokens).toBe(24);
      // Same prompt again at temperature 0: same text (the pool changes scheduling, not math).
      expect((await complete(server.url, 'Once upon a time')).text).toBe(first.text);
      const after = await scrape(server.url);
      expect(metric(after, 'llm_batch_compute_seconds_count')).toBeGreaterThanOrEqual(48);
      expect(metric(after, 'llm_batch_host_overhead_seconds_count')).toBeGreaterThan(40);
      expect(server.output()).not.toMatch(/engine addon .*(missing|cannot|failed)/);
      // On a CPU the cost of a prompt token was measured at load, through the runtime.
      expect(server.output()).toMatch(/a prompt token costs \d+\.\d{3} ms here \(a step \d+\.\d ms more; measured in \d+ ms\): .* within \d+ while three or more wait/);
    } finally {
      await server.stop();
    }
  });

  it('steps in its own native loop by default, with the same text and logprobs as one call per step (ENGINE_LOOP=js)', async () => {
    const prompts = ['Once upon a time', 'The little dog', 'Tom and Sue went', 'A big red ball'];
    const results: unknown[] = [];
    for (const loop of ['native', 'js']) {
      // One thread: the same arithmetic whatever the batch shape or pool.
      // Debug lines say how each request got its slot (fed to the running loop or not).
      const server = await startServer({ API_KEYS: KEY, THREADS: '1', LOG_LEVEL: 'debug', ...(loop === 'js' ? { ENGINE_LOOP: 'js' } : {}) });
      try {
        await waitForModel(server);
        // On a CPU the native loop takes new prompts in alone by default (ENGINE_PROMPT_ALONE=auto);
        // the text below is the same as one call per step, which never does. Both may split small
        // decode steps into one call per token (ENGINE_DECODE_SPLIT=auto, measured even with fixed THREADS).
        expect(server.output()).toMatch(
          loop === 'native'
            ? /persistent pool, native step loop, new prompts in a step of their own, small decode steps split where measured faster\)/
            : /persistent pool, one call per step, small decode steps split where measured faster\)/,
        );
        // Four streams at once, staggered, with logprobs: runs start, take arrivals in, and end by budget or EOS.
        // The first one is long (no EOS) so that the others arrive while its run is in flight:
        // with 20 tokens (a step of this tiny model: ~0.4 ms on 2 cores, 8 ms in all) it often ended
        // before the second arrived 15 ms later (3 of 6 runs on one VM), and nothing was fed.
        results.push(
          await Promise.all(
            prompts.map(async (prompt, i) => {
              await new Promise((r) => setTimeout(r, 5 * i));
              const res = await fetch(`${server.url}/v1/completions`, {
                method: 'POST',
                headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}`, 'Cache-Control': 'no-cache, no-store' },
                body: JSON.stringify({ prompt, temperature: 0, logprobs: 2, ...(i === 0 ? { max_tokens: 200, ignore_eos: true } : { max_tokens: 20 + 8 * i }) }),
              });
              expect(res.status).toBe(200);
              const body = (await res.json()) as { choices: { text: string; logprobs: unknown; finish_reason: string }[]; usage: unknown };
              return { ...body.choices[0], usage: body.usage };
            }),
          ),
        );
        const text = await scrape(server.url);
        expect(metric(text, 'llm_batch_host_overhead_seconds_count')).toBeGreaterThan(20);
        // The native loop takes arrivals in without stopping (the addon's feed); one call per step has no run to feed.
        const fed = server.output().match(/fed to the running loop/g)?.length ?? 0;
        if (loop === 'native') expect(fed).toBeGreaterThan(0);
        else expect(fed).toBe(0);
      } finally {
        await server.stop();
      }
    }
    // Logits differ in the last bits with the batch shape (which requests shared a step is a
    // matter of timing in both paths): texts, tokens and counts must be equal, log-probabilities
    // within 0.05. (On a CPU with AMX, ggml computes batches of several tokens with int8 tiles and
    // single tokens with dot products: an unlikely alternative's -6.664 came back as -6.675.)
    const differences: string[] = [];
    const compare = (a: unknown, b: unknown, path: string): void => {
      // Either side may be a whole number by chance (a log-probability of exactly -2 came back
      // as -2.0004 once in CI), so a number is compared within the tolerance unless both are whole.
      if (typeof a === 'number' && typeof b === 'number' && !(Number.isInteger(a) && Number.isInteger(b))) {
        if (Math.abs(a - b) > 0.05) differences.push(`${path}: ${a} vs ${b}`);
      } else if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
        const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
        for (const k of keys) compare((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`);
      } else if (a !== b) differences.push(`${path}: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
    };
    compare(results[0], results[1], 'results');
    expect(differences).toEqual([]);
  });

  it("samples plain chains (greedy, top-k up to 128, with biases) on its fast path as node-llama-cpp's sampleToken does", async () => {
    // The addon samples a plain chain without copying and sorting the whole vocabulary; the
    // binding's sampleToken (ENGINE_ADDON=off) always does. Same seed, same logits (one request
    // at a time, one thread): the same tokens. The bundled model's 512-token vocabulary is 32
    // blocks of 16, so top_k 20 and 8 take the fast path and the default 40 does not. One choice a
    // request: two (n: 2) run side by side, and whether the second prompt shares the first one's
    // step depends on when it reaches the loop; a step of another shape can round the logits
    // differently and a temperature-1.1 draw can then differ (seen once in CI under load).
    const requests: Record<string, unknown>[] = [
      { prompt: 'Once upon a time', temperature: 0.9, top_k: 20, top_p: 0.9, seed: 11 },
      { prompt: 'The little dog', temperature: 1.3, top_k: 8, seed: 5, ignore_eos: true, logit_bias: { '13': 4, '300': -100 } },
      { prompt: 'Tom and Sue went', temperature: 0, logit_bias: { '13': -100, '400': 3 } },
      { prompt: 'A big red ball', temperature: 1.1, min_p: 0.02, top_k: 3, seed: 9 },
      { prompt: 'Once upon a time', temperature: 0.9, seed: 3 },
    ];
    const outputs: unknown[][] = [];
    for (const env of [{}, { ENGINE_ADDON: 'off' }] as Record<string, string>[]) {
      const server = await startServer({ API_KEYS: KEY, THREADS: '1', ...env });
      const texts: unknown[] = [];
      try {
        await waitForModel(server);
        for (const body of requests) {
          const res = await fetch(`${server.url}/v1/completions`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}`, 'Cache-Control': 'no-cache, no-store' },
            body: JSON.stringify({ max_tokens: 40, ...body }),
          });
          expect(res.status).toBe(200);
          const json = (await res.json()) as { choices: { text: string; finish_reason: string }[] };
          texts.push(json.choices.map((c) => [c.text, c.finish_reason]));
        }
      } finally {
        await server.stop();
      }
      outputs.push(texts);
    }
    expect(outputs[0]).toEqual(outputs[1]);
    // Sampled, not constant: the seeded requests differ from one another.
    expect(new Set(outputs[0].map((t) => JSON.stringify(t))).size).toBe(requests.length);
  });

  it('falls back to node-llama-cpp when the addon is missing, with a warning, and still generates the same text', async () => {
    const withAddon = await startServer({ API_KEYS: KEY });
    let expected: string;
    try {
      await waitForModel(withAddon);
      expected = (await complete(withAddon.url, 'The little dog')).text;
    } finally {
      await withAddon.stop();
    }
    const server = await startServer({ API_KEYS: KEY, ENGINE_ADDON_PATH: join(ROOT, 'no-such-dir', 'llm_engine.node') });
    try {
      await waitForModel(server);
      expect(server.output()).toMatch(/engine addon not built .*no-such-dir.*node-llama-cpp's own decode path/);
      expect(metric(await scrape(server.url), 'llm_model_info', { engine: 'node-llama-cpp' })).toBe(1);
      expect((await complete(server.url, 'The little dog')).text).toBe(expected);
      // Without the addon there is no compute time to report, so no host-overhead figure either.
      expect(metric(await scrape(server.url), 'llm_batch_host_overhead_seconds_count')).toBe(0);
    } finally {
      await server.stop();
    }
  });

  it('fills the hole a finished stream leaves between two busy slots, and counts the throwaway tokens (ENGINE_GAP_FILL)', async () => {
    /** Starts a stream and resolves once its first token arrived, with a promise of its end. */
    const stream = async (url: string, prompt: string, maxTokens: number): Promise<{ done: Promise<number> }> => {
      const res = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}`, 'Cache-Control': 'no-cache, no-store' },
        body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true }),
      });
      expect(res.status).toBe(200);
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      let chunks = (await reader.read()).done ? 0 : 1;
      const done = (async () => {
        while (!(await reader.read()).done) chunks++;
        return chunks;
      })();
      return { done };
    };
    const filled: Record<string, number> = {};
    for (const fill of ['1', '0']) {
      // Three slots taken in turn (a fresh server: slot 0, then the idle slot next to a busy one):
      // the middle stream ends first while the two others go on. Two one-token items are a step
      // the policy may also run as two decode calls, which need no filling (ENGINE_DECODE_SPLIT):
      // off here, so that every such step is one call.
      const server = await startServer({ API_KEYS: KEY, THREADS: '1', PARALLEL_SLOTS: '3', ENGINE_GAP_FILL: fill, ENGINE_DECODE_SPLIT: 'off', LOG_LEVEL: 'debug' });
      try {
        await waitForModel(server);
        const a = await stream(server.url, 'Once upon a time', 400);
        const b = await stream(server.url, 'The little dog', 60);
        const c = await stream(server.url, 'Tom and Sue went', 400);
        await Promise.all([a.done, b.done, c.done]);
        filled[fill] = metric(await scrape(server.url), 'llm_batch_filled_tokens_total');
        if (fill === '1' && !(filled[fill] > 0)) throw new Error(`no hole was filled; slots as assigned:\n${server.output().split('\n').filter((l) => /slot \d+ assigned/.test(l)).join('\n')}`);
      } finally {
        await server.stop();
      }
    }
    // Slot 1 idle between 0 and 2 for ~340 steps: one throwaway token each (a step or two
    // before its stream was seen to end aside).
    expect(filled['1']).toBeGreaterThan(250);
    expect(filled['0']).toBe(0);
  });

  it('pads decode steps of five to seven streams to eight tokens (ENGINE_DECODE_PAD=on), with the same text at temperature 0', async () => {
    const prompts = ['Once upon a time', 'The little dog', 'Tom and Sue went', 'A big red ball', 'The sun was', 'Lily saw a', 'One day a'];
    const texts: Record<string, string[]> = {};
    const filled: Record<string, number> = {};
    for (const pad of ['on', 'off']) {
      // Eight slots, seven streams of different lengths: decode steps of seven, then six and five
      // items. No hole filling, so that every throwaway token counted is padding.
      const server = await startServer({ API_KEYS: KEY, THREADS: '1', PARALLEL_SLOTS: '8', ENGINE_GAP_FILL: '0', ENGINE_DECODE_PAD: pad });
      try {
        await waitForModel(server);
        if (pad === 'on') expect(server.output()).toMatch(/decode steps of 5-7 streams padded to 8 where measured faster/);
        else expect(server.output()).not.toMatch(/padded to 8/);
        texts[pad] = await Promise.all(
          prompts.map(async (prompt, i) => {
            const res = await fetch(`${server.url}/v1/completions`, {
              method: 'POST',
              headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}`, 'Cache-Control': 'no-cache, no-store' },
              body: JSON.stringify({ prompt, temperature: 0, max_tokens: 60 + 10 * i, ignore_eos: true }),
            });
            expect(res.status).toBe(200);
            return ((await res.json()) as { choices: { text: string }[] }).choices[0].text;
          }),
        );
        filled[pad] = metric(await scrape(server.url), 'llm_batch_filled_tokens_total');
      } finally {
        await server.stop();
      }
    }
    // The policy tries the padded variant while it warms up (and keeps it where it is faster).
    expect(filled.on).toBeGreaterThan(0);
    expect(filled.off).toBe(0);
    expect(texts.on).toEqual(texts.off);
  });

  it('ENGINE_ADDON=off runs without it and says so in the metrics, without a warning', async () => {
    const server = await startServer({ API_KEYS: KEY, ENGINE_ADDON: 'off' });
    try {
      await waitForModel(server);
      expect(metric(await scrape(server.url), 'llm_model_info', { engine: 'node-llama-cpp' })).toBe(1);
      // No warning about the addon (the start-up summary says "engine addon off" at info).
      const warnings = server.output().split('\n').filter((l) => /"level":(40|50|60)/.test(l));
      expect(warnings.join('\n')).not.toMatch(/engine addon/);
      expect((await complete(server.url, 'Once upon a time')).tokens).toBe(24);
    } finally {
      await server.stop();
    }
  });
});
