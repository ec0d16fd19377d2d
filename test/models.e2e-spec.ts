import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { ApiKeysService } from '@app/auth';
import { AppConfig, BUNDLED_MODEL } from '@app/common';
import { buildCatalog, synthesizeModel } from '@app/inference';
import { UsageLedgerService } from '@app/usage';
import { LlamaBackend } from '../libs/inference/src/registry/llama.backend';
import { runCli } from './support/cli';
import { post, sleep, waitFor } from './support/http';
import { metric, scrape } from './support/metrics';
import { parseSse, startTestApp, TestApp } from './support/test-app';

/**
 * Several models in one server, on real GGUFs in a temporary MODELS_DIR: copies of the bundled
 * model, `model synth` outputs (one big enough that a generation stays in flight for a while,
 * one whose head size allows a quantized KV cache), an embedding-kind entry, a corrupt file and
 * a missing one, under a models file with aliases, keep-alive and per-model settings.
 */
const SLOW_SHAPE = { dim: 512, layers: 8, heads: 8, kvHeads: 8, ffn: 1536, vocab: 512, context: 2048, type: 8 as never };
const QUANT_SHAPE = { dim: 128, layers: 2, heads: 2, kvHeads: 2, ffn: 256, vocab: 512, context: 2048, type: 0 as never };

function fixtures(): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'models-e2e-'));
  for (const name of ['chat-a', 'chat-b', 'short', 'embed', 'ranker']) copyFileSync(BUNDLED_MODEL, join(dir, `${name}.gguf`));
  synthesizeModel(join(dir, 'quant.gguf'), QUANT_SHAPE, BUNDLED_MODEL, 1);
  // GGUF magic, then garbage: the header cannot be read.
  writeFileSync(join(dir, 'broken.gguf'), Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(64, 7)]));
  const file = join(dir, 'models.yaml');
  writeFileSync(
    file,
    [
      'default: chat-a',
      'models:',
      '  - id: chat-b',
      '    path: chat-b.gguf',
      '    aliases: [gpt-4o-mini]',
      '    defaults: { temperature: 0, max_tokens: 5 }',
      '  - id: short',
      '    path: short.gguf',
      '    keep_alive: 1s',
      '  - id: embed',
      '    path: embed.gguf',
      '    kind: embedding',
      '  - id: quant',
      '    path: quant.gguf',
      '    flash_attention: on',
      '    kv_cache_type: q8_0',
      '  - id: missing',
      '    path: missing.gguf',
      '  - id: ranker',
      '    path: ranker.gguf',
      '    kind: rerank',
    ].join('\n'),
  );
  return { dir, file };
}

const auth = (key: string): Record<string, string> => ({ Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' });

async function get(t: TestApp, path: string, key = t.key): Promise<{ status: number; body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await fetch(`${t.url}${path}`, { headers: auth(key) });
  return { status: res.status, body: await res.json() };
}

const chat = (t: TestApp, model: string | undefined, key = t.key, extra: object = {}) =>
  post(t.url, '/v1/chat/completions', key, { ...(model === undefined ? {} : { model }), messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 4, temperature: 0, ...extra });

const states = async (t: TestApp): Promise<Record<string, string>> =>
  Object.fromEntries(((await get(t, '/v1/models')).body.data as { id: string; state: string }[]).map((m) => [m.id, m.state]));

describe('several models in one server', () => {
  let t: TestApp;
  let env: Record<string, string>;
  beforeAll(async () => {
    const { dir, file } = fixtures();
    env = { MODELS_DIR: dir, MODELS_FILE: file, MODEL_KEEP_ALIVE: '5m' };
    t = await startTestApp(env);
  });
  afterAll(() => t?.close());

  it('/v1/models lists every configured model with its state; only the default is loaded at start', async () => {
    const { body } = await get(t, '/v1/models');
    expect(body.data.map((m: { id: string }) => m.id)).toEqual(['chat-b', 'short', 'embed', 'quant', 'missing', 'ranker', 'broken', 'chat-a']);
    const byId = Object.fromEntries(body.data.map((m: { id: string }) => [m.id, m]));
    expect(byId['chat-a']).toMatchObject({ object: 'model', owned_by: 'local', kind: 'chat', state: 'loaded', default: true, meta: { context_size: 512 } });
    expect(byId['chat-b']).toMatchObject({ kind: 'chat', state: 'unloaded', aliases: ['gpt-4o-mini'], default: false });
    expect(byId['chat-b'].meta).toBeUndefined();
    expect(byId.embed).toMatchObject({ kind: 'embedding', state: 'unloaded' });
    // The OpenAI SDK reads the same list.
    const client = new OpenAI({ apiKey: t.key, baseURL: `${t.url}/v1` });
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids).toContain('chat-b');
    expect((await client.models.retrieve('gpt-4o-mini')).id).toBe('chat-b');
  });

  it('routes by id and alias, loading a model on its first request (the request waits for it)', async () => {
    expect((await states(t))['chat-b']).toBe('unloaded');
    const before = await scrape(t.url);
    const viaAlias = await chat(t, 'gpt-4o-mini');
    expect(viaAlias.status).toBe(200);
    // Responses name the model that answered (OpenAI answers gpt-4o-mini with a dated id too).
    expect(viaAlias.body.model).toBe('chat-b');
    expect((await states(t))['chat-b']).toBe('loaded');
    const viaId = await chat(t, 'chat-b');
    expect(viaId.body.model).toBe('chat-b');
    // The same request on the same model: answered by the exact cache, scoped by model.
    expect(viaId.headers.get('x-cache')).toBe('HIT');
    const byDefault = await chat(t, undefined);
    expect(byDefault.body.model).toBe('chat-a');
    // chat-a is a copy of chat-b's file, but another model: never answered from chat-b's entries.
    expect(byDefault.headers.get('x-cache')).toBe('MISS');
    // Each model has its own scheduler and series.
    const after = await scrape(t.url);
    const delta = (name: string, labels: Record<string, string>): number => metric(after, name, labels) - metric(before, name, labels);
    expect(delta('llm_tokens_generated_total', { model: 'chat-b' })).toBe(viaAlias.body.usage.completion_tokens);
    expect(delta('llm_tokens_generated_total', { model: 'chat-a' })).toBe(byDefault.body.usage.completion_tokens);
    expect(metric(after, 'llm_slots_total', { model: 'chat-b' })).toBe(2);
    expect(metric(after, 'llm_model_state', { model: 'chat-b', state: 'loaded' })).toBe(1);
    expect(metric(after, 'llm_model_loads_total', { model: 'chat-b', result: 'ok' })).toBe(1);
    expect(metric(after, 'llm_model_memory_bytes', { model: 'chat-b', memory: 'ram' })).toBeGreaterThan(1_000_000);
    expect(delta('llm_time_to_first_token_seconds_count', { model: 'chat-b' })).toBe(1);
  });

  it("applies the model's sampling defaults when the request sets none (chat-b: max_tokens 5, temperature 0)", async () => {
    const a = await post(t.url, '/v1/completions', t.key, { model: 'chat-b', prompt: 'Once upon a time', ignore_eos: true });
    expect(a.body.usage.completion_tokens).toBe(5);
    const b = await post(t.url, '/v1/completions', t.key, { model: 'chat-b', prompt: 'Once upon a time', ignore_eos: true });
    expect(b.body.choices[0].text).toBe(a.body.choices[0].text);
    const own = await post(t.url, '/v1/completions', t.key, { model: 'chat-b', prompt: 'Once upon a time', ignore_eos: true, max_tokens: 3 });
    expect(own.body.usage.completion_tokens).toBe(3);
  });

  it('/v1/embeddings uses the embedding model when none is named; a named model is used; kinds are checked', async () => {
    const unnamed = await post(t.url, '/v1/embeddings', t.key, { input: 'hello' });
    expect(unnamed.status).toBe(200);
    expect(unnamed.body.model).toBe('embed');
    expect((await states(t)).embed).toBe('loaded');
    const named = await post(t.url, '/v1/embeddings', t.key, { model: 'chat-a', input: 'hello' });
    expect(named.body.model).toBe('chat-a');
    // Same weights (copies of one file): the same vector, from two models.
    expect(named.body.data[0].embedding[0]).toBeCloseTo(unnamed.body.data[0].embedding[0], 5);
    const wrongKind = await chat(t, 'embed');
    expect(wrongKind.status).toBe(400);
    expect(wrongKind.body.error).toMatchObject({ code: 'model_kind_mismatch', param: 'model' });
    const unknown = await chat(t, 'gpt-5');
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toMatchObject({ code: 'model_not_found', param: 'model' });
  });

  it('a model with flash attention and a q8_0 KV cache loads and generates; /admin/models shows its settings', async () => {
    const r = await post(t.url, '/v1/completions', t.key, { model: 'quant', prompt: 'Once upon a time', max_tokens: 6, ignore_eos: true, temperature: 0 });
    expect(r.status).toBe(200);
    expect(r.body.usage.completion_tokens).toBe(6);
    const admin = await get(t, '/admin/models');
    const quant = admin.body.data.find((m: { id: string }) => m.id === 'quant');
    expect(quant).toMatchObject({ state: 'loaded', settings: { flash_attention: 'on', kv_cache_type_k: 'q8_0', kv_cache_type_v: 'q8_0' }, loaded: { engine: 'addon' } });
    expect(admin.body).toMatchObject({ default: 'chat-a', embedding: 'embed', memory: { budget: { ram: expect.any(Number) }, used: { ram: expect.any(Number) } } });
  });

  it('a model idle past its keep-alive is unloaded; the next request loads it again', async () => {
    expect((await chat(t, 'short')).status).toBe(200);
    expect((await get(t, '/admin/models')).body.data.find((m: { id: string }) => m.id === 'short')).toMatchObject({ state: 'loaded', keep_alive_seconds: 1 });
    await waitFor(async () => (await states(t)).short === 'unloaded', 8000);
    expect(metric(await scrape(t.url), 'llm_model_unloads_total', { model: 'short', reason: 'keep_alive' })).toBe(1);
    // The default model has no keep-alive: still there.
    expect((await states(t))['chat-a']).toBe('loaded');
    expect((await chat(t, 'short')).status).toBe(200);
  });

  it('a corrupt or missing file is a clear 503 for that model; the server keeps serving the others', async () => {
    const broken = await chat(t, 'broken');
    expect(broken.status).toBe(503);
    expect(broken.body.error).toMatchObject({ code: 'model_load_failed' });
    expect(broken.body.error.message).toMatch(/^Model broken failed to load: Cannot load model .*broken\.gguf: /);
    expect(broken.headers.get('retry-after')).toMatch(/^\d+$/);
    const missing = await chat(t, 'missing');
    expect(missing.status).toBe(503);
    expect(missing.body.error.message).toMatch(/^Model missing failed to load: Model file not found: .*missing\.gguf$/);
    const list = await get(t, '/v1/models');
    expect(list.body.data.find((m: { id: string }) => m.id === 'broken')).toMatchObject({ state: 'failed', error: expect.stringContaining('broken.gguf') });
    // A model declared a reranker that cannot rank: its load says so.
    expect((await chat(t, 'ranker')).body.error.code).toBe('model_kind_mismatch');
    const ranker = await fetch(`${t.url}/admin/models`, { method: 'POST', headers: auth(t.key), body: JSON.stringify({ action: 'load', model: 'ranker' }) });
    expect(ranker.status).toBe(503);
    expect(((await ranker.json()) as { error: { message: string } }).error.message).toMatch(
      /^Model ranker failed to load: Cannot create the ranking context of model ranker \(is it a reranker\?\): Computing rankings is not supported for this model/,
    );
    expect((await chat(t, 'chat-a')).status).toBe(200);
    expect((await chat(t, 'gpt-4o-mini')).status).toBe(200);
    expect((await get(t, '/health/ready')).status).toBe(200);
  });

  it('a key limited to some models: 403 model_not_allowed for others, /v1/models lists only its own, limits per model', async () => {
    const keys = t.app.get(ApiKeysService);
    const { key } = await keys.create({ name: 'team-b', models: ['gpt-4o-mini', 'embed'], modelRpm: { 'chat-b': 2 } });
    const denied = await chat(t, 'chat-a', key);
    expect(denied.status).toBe(403);
    expect(denied.body.error).toMatchObject({ code: 'model_not_allowed', param: 'model' });
    // No model named: the default (chat-a), which this key may not use either.
    expect((await chat(t, undefined, key)).body.error.code).toBe('model_not_allowed');
    // The alias in the key's list admits the model by its id too.
    expect((await chat(t, 'chat-b', key)).status).toBe(200);
    const listed = await get(t, '/v1/models', key);
    expect(listed.body.data.map((m: { id: string }) => m.id).sort()).toEqual(['chat-b', 'embed']);
    expect((await get(t, '/v1/models/chat-a', key)).status).toBe(404);
    // Two requests per window on chat-b (by id or alias: one model, one counter); the third is refused.
    expect((await chat(t, 'gpt-4o-mini', key)).status).toBe(200);
    const limited = await chat(t, 'chat-b', key);
    expect(limited.status).toBe(429);
    expect(limited.body.error).toMatchObject({ code: 'rate_limit_exceeded' });
    expect(limited.body.error.message).toMatch(/on model chat-b: 2 requests per/);
    expect((await post(t.url, '/v1/embeddings', key, { model: 'embed', input: 'x' })).status).toBe(200);
    // The tokenizer routes follow the same access: another model is refused, its own is served.
    const tokenizeDenied = await post(t.url, '/tokenize', key, { model: 'chat-a', content: 'hi' });
    expect(tokenizeDenied.status).toBe(403);
    expect(tokenizeDenied.body.error).toMatchObject({ code: 'model_not_allowed', param: 'model' });
    expect((await post(t.url, '/detokenize', key, { tokens: [1, 2] })).body.error.code).toBe('model_not_allowed');
    // (chat-b's two requests per window are spent above: the per-model limit holds here too.)
    expect((await post(t.url, '/tokenize', key, { model: 'gpt-4o-mini', content: 'hi' })).status).toBe(429);
    const tokenized = await post(t.url, '/tokenize', key, { model: 'embed', content: 'hi' });
    expect(tokenized.status).toBe(200);
    expect(tokenized.body.tokens.length).toBeGreaterThan(0);
    expect((await post(t.url, '/detokenize', key, { model: 'embed', tokens: tokenized.body.tokens })).body.content).toContain('hi');
  });

  it('tokens are metered per key and per model: a per-model token limit, and the usage ledger by model', async () => {
    const keys = t.app.get(ApiKeysService);
    const { key, record } = await keys.create({ name: 'metered', modelTpm: { 'chat-a': 10 } });
    const first = await chat(t, 'chat-a', key, { max_tokens: 8, ignore_eos: true });
    expect(first.status).toBe(200);
    expect(first.body.usage.total_tokens).toBeGreaterThanOrEqual(10);
    const refused = await chat(t, 'chat-a', key);
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ code: 'token_rate_limit_exceeded' });
    expect(refused.body.error.message).toMatch(/on model chat-a/);
    // Another model is another window.
    const other = await chat(t, 'chat-b', key, { max_tokens: 3, ignore_eos: true });
    expect(other.status).toBe(200);
    await t.app.get(UsageLedgerService).flush();
    const usage = await get(t, `/admin/usage?key=${record.id}&group_by=model`);
    const byModel = Object.fromEntries(usage.body.data.map((r: { model: string }) => [r.model, r]));
    expect(byModel['chat-a']).toMatchObject({ requests: 2, completion_tokens: first.body.usage.completion_tokens, prompt_tokens: first.body.usage.prompt_tokens, errors: 1 });
    expect(byModel['chat-b']).toMatchObject({ requests: 1, completion_tokens: other.body.usage.completion_tokens });
  });

  it('the CLI: keys create --models, model list/unload/load against the running server', async () => {
    const dataEnv = { DATA_DIR: t.config.dataDir, LOG_LEVEL: 'error' };
    const created = await runCli(['keys', 'create', '--name', 'cli-scoped', '--models', 'chat-b', '--model-tpm', 'chat-b=100000', '--json'], dataEnv);
    expect(created.code).toBe(0);
    const issued = JSON.parse(created.stdout);
    expect(issued).toMatchObject({ models: ['chat-b'], model_limits: { 'chat-b': { rpm: 0, tpm: 100000 } } });
    expect((await chat(t, 'chat-b', issued.key)).status).toBe(200);
    expect((await chat(t, 'chat-a', issued.key)).body.error.code).toBe('model_not_allowed');
    const target = ['--url', t.url, '--key', t.key];
    const list = await runCli(['model', 'list', ...target, '--json'], { ...env, LOG_LEVEL: 'error' });
    expect(list.code).toBe(0);
    expect(JSON.parse(list.stdout)).toMatchObject({ source: 'server', default: 'chat-a', data: expect.arrayContaining([expect.objectContaining({ id: 'chat-b', state: 'loaded' })]) });
    const unload = await runCli(['model', 'unload', 'gpt-4o-mini', ...target], { ...env, LOG_LEVEL: 'error' });
    expect(unload.stdout).toBe('Unloaded chat-b\n');
    expect((await states(t))['chat-b']).toBe('unloaded');
    const load = await runCli(['model', 'load', 'chat-b', ...target], { ...env, LOG_LEVEL: 'error' });
    expect(load.code).toBe(0);
    expect((await states(t))['chat-b']).toBe('loaded');
    const text = await runCli(['model', 'list', ...target], { ...env, LOG_LEVEL: 'error' });
    expect(text.stdout).toMatch(/^chat-a \(default\)\s+chat\s+loaded/m);
    // Without a server: the configuration's models.
    const offline = await runCli(['model', 'list', '--url', 'http://127.0.0.1:9', '--json'], { ...env, LOG_LEVEL: 'error' });
    expect(JSON.parse(offline.stdout)).toMatchObject({ source: 'configuration', default: 'chat-a' });
    // Admin routes need the admin scope.
    const plain = await t.app.get(ApiKeysService).create({ name: 'no-admin' });
    expect((await get(t, '/admin/models', plain.key)).status).toBe(403);
  });

  it('a restart with the same configuration gives the same registry', async () => {
    const describe = async (app: TestApp): Promise<unknown> =>
      (await get(app, '/v1/models')).body.data.map((m: { id: string; kind: string; aliases: string[]; default: boolean }) => [m.id, m.kind, m.aliases, m.default]);
    const before = await describe(t);
    const again = await startTestApp(env);
    try {
      expect(await describe(again)).toEqual(before);
    } finally {
      await again.close();
    }
  });
});

describe('the memory budget', () => {
  let t: TestApp;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'models-budget-'));
    synthesizeModel(join(dir, 'x.gguf'), SLOW_SHAPE, BUNDLED_MODEL, 1);
    for (const name of ['y', 'z']) copyFileSync(join(dir, 'x.gguf'), join(dir, `${name}.gguf`));
    // Sized with the server's own estimator: the default model and two others fit, a third does not.
    // Context for streams long enough to outlast the bounded wait below on a fast machine too.
    // PROMPT_PACK_TOKENS set: no prompt-cost measurement at load, which took these loads past the
    // 1 s MODEL_LOAD_TIMEOUT_MS below on a slow 2-core VM with another model streaming.
    const base = { MODELS_DIR: dir, MODEL_PATH: BUNDLED_MODEL, CONTEXT_SIZE: '1024', PARALLEL_SLOTS: '2', THREADS: '1', PROMPT_PACK_TOKENS: '16' };
    const catalog = buildCatalog(AppConfig.fromEnv(base));
    const backend = new LlamaBackend('cpu', BUNDLED_MODEL);
    const [main, x] = await Promise.all([backend.estimate(catalog.specs[0]), backend.estimate(catalog.specs[1])]);
    await backend.dispose();
    const budget = main.ram + 2 * x.ram + Math.floor(x.ram / 2);
    // No response cache: every stream below must run on its model.
    t = await startTestApp({ ...base, MODEL_MEMORY_BUDGET: `ram=${budget}b,vram=unlimited`, MODEL_LOAD_TIMEOUT_MS: '1000', CACHE_ENABLED: 'false' });
  }, 120_000);
  afterAll(() => t?.close());

  /** Tokens of a long stream: it must outlast MODEL_LOAD_TIMEOUT_MS (1 s) even at ~1.5 ms a token. */
  const LONG = 900;

  /** A long generation on `model`, read as it streams: resolves with its events once it ends. */
  function longStream(model: string): { firstToken: Promise<void>; done: Promise<{ status: number; finish: string; tokens: number; text: string }> } {
    let first!: () => void;
    const firstToken = new Promise<void>((r) => (first = r));
    const done = (async () => {
      const res = await fetch(`${t.url}/v1/completions`, {
        method: 'POST',
        headers: auth(t.key),
        body: JSON.stringify({ model, prompt: 'Once upon a time', max_tokens: LONG, ignore_eos: true, temperature: 0, stream: true, stream_options: { include_usage: true } }),
      });
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      let body = '';
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        body += Buffer.from(value).toString();
        if (body.includes('"text"')) first();
      }
      first();
      const events = parseSse(body).filter((e) => e !== '[DONE]').map((e) => JSON.parse(e));
      const finish = events.map((e) => e.choices?.[0]?.finish_reason).find(Boolean);
      const usage = events.find((e) => e.usage)?.usage;
      return { status: res.status, finish, tokens: usage?.completion_tokens ?? -1, text: events.map((e) => e.choices?.[0]?.text ?? '').join('') };
    })();
    return { firstToken, done };
  }

  it('evicts the least recently used idle model to load another; a stream in flight on a third model is untouched', async () => {
    expect((await post(t.url, '/v1/completions', t.key, { model: 'y', prompt: 'a', max_tokens: 1 })).status).toBe(200);
    await sleep(20);
    const stream = longStream('x');
    await stream.firstToken;
    const models = (await get(t, '/admin/models')).body.data;
    expect(models.find((m: { id: string }) => m.id === 'x')).toMatchObject({ state: 'loaded', in_flight: 1 });
    // x (in flight) and y (idle) loaded; z needs room: y goes, x stays.
    const z = await post(t.url, '/v1/completions', t.key, { model: 'z', prompt: 'a', max_tokens: 1 });
    expect(z.status).toBe(200);
    const s = await states(t);
    expect(s).toMatchObject({ stories260K: 'loaded', x: 'loaded', y: 'unloaded', z: 'loaded' });
    const result = await stream.done;
    expect(result).toMatchObject({ status: 200, finish: 'length', tokens: LONG });
    expect(metric(await scrape(t.url), 'llm_model_unloads_total', { model: 'y', reason: 'budget' })).toBe(1);
  });

  it('when every other model is in use, a request for one more waits (bounded), then 503 with Retry-After; the streams finish', async () => {
    const a = longStream('x');
    const b = longStream('z');
    await Promise.all([a.firstToken, b.firstToken]);
    const started = Date.now();
    const refused = await post(t.url, '/v1/completions', t.key, { model: 'y', prompt: 'a', max_tokens: 1 });
    expect(refused.status).toBe(503);
    expect(refused.body.error).toMatchObject({ code: 'model_budget_exceeded' });
    expect(refused.body.error.message).toMatch(/memory budget .* is taken by models in use/);
    expect(refused.headers.get('retry-after')).toBe('5');
    // The wait for room ends 250 ms before MODEL_LOAD_TIMEOUT_MS, so that the 503 says why.
    expect(Date.now() - started).toBeGreaterThanOrEqual(700);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    expect(ra).toMatchObject({ finish: 'length', tokens: LONG });
    expect(rb).toMatchObject({ finish: 'length', tokens: LONG });
    // With the streams done, y fits again (an idle model makes room).
    expect((await post(t.url, '/v1/completions', t.key, { model: 'y', prompt: 'a', max_tokens: 1 })).status).toBe(200);
  });
});
