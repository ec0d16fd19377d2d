import OpenAI from 'openai';
import request from 'supertest';
import { ApiKeysService } from '@app/auth';
import { ResponseCacheService } from '@app/caching';
import { InferenceService } from '@app/inference';
import { parseSse, startTestApp, TestApp } from './support/test-app';

/** Body fields that a cached answer must repeat exactly (ids and times are fresh by design). */
function stable(body: Record<string, unknown>): Record<string, unknown> {
  const { id: _id, created: _created, ...rest } = body;
  return rest;
}

describe('exact response cache (in-memory store) on the bundled model', () => {
  let t: TestApp;
  let inference: InferenceService;
  let cache: ResponseCacheService;
  beforeAll(async () => {
    t = await startTestApp({ CACHE_MAX_ENTRIES: '4' });
    inference = t.app.get(InferenceService);
    cache = t.app.get(ResponseCacheService);
  });
  afterAll(() => t.close());

  const auth = (): Record<string, string> => ({ Authorization: `Bearer ${t.key}` });
  const generate = (body: object, headers: Record<string, string> = {}) =>
    request(t.url).post('/v1/generate').set(auth()).set(headers).send(body).expect(200);

  it('answers a repeated deterministic request from the cache without touching the model', async () => {
    const body = { prompt: 'Once upon a time', max_tokens: 24, temperature: 0 };
    const first = await generate(body);
    expect(first.headers['x-cache']).toBe('MISS');
    const tokensAfterMiss = inference.generatedTokens;
    const second = await generate(body);
    expect(second.headers['x-cache']).toBe('HIT');
    expect(second.headers.age).toMatch(/^\d+$/);
    expect(stable(second.body)).toEqual(stable(first.body));
    expect(second.body.id).not.toBe(first.body.id);
    // The model generated nothing for the hit: that is where the time goes.
    expect(inference.generatedTokens).toBe(tokensAfterMiss);
    expect((await cache.stats()).exact).toMatchObject({ hits: expect.any(Number), writes: expect.any(Number) });
  });

  it('keys on every output-changing field: another max_tokens, stop or top_p at temperature > 0 misses', async () => {
    const base = { prompt: 'The little dog', max_tokens: 12, temperature: 0 };
    expect((await generate(base)).headers['x-cache']).toBe('MISS');
    expect((await generate({ ...base, max_tokens: 13 })).headers['x-cache']).toBe('MISS');
    expect((await generate({ ...base, stop_sequences: ['zzz'] })).headers['x-cache']).toBe('MISS');
    // top_p does nothing at temperature 0 (greedy), so it does not split the cache.
    expect((await generate({ ...base, top_p: 0.5 })).headers['x-cache']).toBe('HIT');
  });

  it('does not cache sampled requests by default; X-Cache-Sampled: true opts in', async () => {
    const body = { prompt: 'A cat sat', max_tokens: 8, temperature: 0.8 };
    expect((await generate(body)).headers['x-cache']).toBe('MISS');
    const before = inference.generatedTokens;
    expect((await generate(body)).headers['x-cache']).toBe('MISS');
    expect(inference.generatedTokens).toBeGreaterThan(before);

    const opted = { prompt: 'A bird sang', max_tokens: 8, temperature: 0.8 };
    const a = await generate(opted, { 'X-Cache-Sampled': 'true' });
    expect(a.headers['x-cache']).toBe('MISS');
    const b = await generate(opted, { 'X-Cache-Sampled': 'true' });
    expect(b.headers['x-cache']).toBe('HIT');
    expect(b.body.text).toBe(a.body.text);
  });

  it('rejects a bad X-Cache-Sampled value with a 400 envelope', async () => {
    const res = await request(t.url)
      .post('/v1/generate')
      .set(auth())
      .set('X-Cache-Sampled', 'perhaps')
      .send({ prompt: 'Hi', max_tokens: 2, temperature: 0 })
      .expect(400);
    expect(res.body.error).toMatchObject({ code: 'invalid_cache_directive', param: 'X-Cache-Sampled' });
  });

  it('honours Cache-Control: no-store (not written) and no-cache (not read, but written)', async () => {
    const body = { prompt: 'The sun was', max_tokens: 10, temperature: 0 };
    expect((await generate(body, { 'Cache-Control': 'no-store' })).headers['x-cache']).toBe('MISS');
    expect((await generate(body, { 'Cache-Control': 'no-store' })).headers['x-cache']).toBe('MISS');
    // Nothing was stored by the no-store requests: a plain request misses, then stores.
    expect((await generate(body)).headers['x-cache']).toBe('MISS');
    expect((await generate(body)).headers['x-cache']).toBe('HIT');
    const before = inference.generatedTokens;
    expect((await generate(body, { 'Cache-Control': 'no-cache' })).headers['x-cache']).toBe('MISS');
    expect(inference.generatedTokens).toBeGreaterThan(before);
    expect((await generate(body, { 'Cache-Control': 'max-age=0, No-Cache, no-store' })).headers['x-cache']).toBe('MISS');
  });

  it('replays a hit as the same SSE stream, chunk for chunk (seed format)', async () => {
    const body = { prompt: 'One day, a boy', max_tokens: 20, temperature: 0 };
    const live = await request(t.url).post('/v1/generate/stream').set(auth()).send(body).expect(200);
    expect(live.headers['x-cache']).toBe('MISS');
    const replayed = await request(t.url).post('/v1/generate/stream').set(auth()).send(body).expect(200);
    expect(replayed.headers['x-cache']).toBe('HIT');
    expect(replayed.headers['content-type']).toMatch(/text\/event-stream/);
    expect(parseSse(replayed.text)).toEqual(parseSse(live.text));
    // The plain and the streamed request share the entry; stream:true on /v1/generate too.
    const plain = await generate(body);
    expect(plain.headers['x-cache']).toBe('HIT');
    const viaFlag = await request(t.url).post('/v1/generate').set(auth()).send({ ...body, stream: true }).expect(200);
    expect(viaFlag.headers['x-cache']).toBe('HIT');
    expect(parseSse(viaFlag.text)).toEqual(parseSse(live.text));
    const events = parseSse(live.text).map((d) => JSON.parse(d));
    expect(events.filter((e) => !e.done).map((e) => e.text).join('')).toBe(plain.body.text);
  });

  it('serves OpenAI completions and chat from the cache with fresh ids, streamed or not', async () => {
    const client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: t.key, maxRetries: 0 });
    const params = { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 16, temperature: 0 } as const;
    const miss = await client.completions.create(params).withResponse();
    expect(miss.response.headers.get('x-cache')).toBe('MISS');
    const hit = await client.completions.create(params).withResponse();
    expect(hit.response.headers.get('x-cache')).toBe('HIT');
    expect(hit.data.id).not.toBe(miss.data.id);
    expect(hit.data.choices).toEqual(miss.data.choices);
    expect(hit.data.usage).toMatchObject({ prompt_tokens: miss.data.usage?.prompt_tokens, completion_tokens: 16 });
    // Nothing of the prompt was evaluated for a hit.
    expect(hit.data.usage?.prompt_tokens_details?.cached_tokens).toBe(miss.data.usage?.prompt_tokens);

    const stream = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } }).withResponse();
    expect(stream.response.headers.get('x-cache')).toBe('HIT');
    let text = '';
    let finish: string | null = null;
    for await (const chunk of stream.data) {
      text += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe(miss.data.choices[0].text);
    expect(finish).toBe('length');

    const chat = { model: 'stories260K', messages: [{ role: 'user' as const, content: 'Tell me a story' }], max_tokens: 12, seed: 7, temperature: 0.9 };
    const c1 = await client.chat.completions.create(chat).withResponse();
    expect(c1.response.headers.get('x-cache')).toBe('MISS');
    const raw = await request(t.url).post('/v1/chat/completions').set(auth()).send({ ...chat, stream: true }).expect(200);
    expect(raw.headers['x-cache']).toBe('HIT');
    const payloads = parseSse(raw.text);
    expect(payloads.at(-1)).toBe('[DONE]');
    const chunks = payloads.slice(0, -1).map((p) => JSON.parse(p));
    expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id && c.id !== c1.data.id)).toBe(true);
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(chunks.map((c) => c.choices[0].delta.content ?? '').join('')).toBe(c1.data.choices[0].message.content);
  });

  it('keeps the in-memory store within CACHE_MAX_ENTRIES, evicting the least recently used', async () => {
    await request(t.url).delete('/admin/cache').set(auth()).expect(200);
    const body = (i: number) => ({ prompt: `Story number ${i}`, max_tokens: 4, temperature: 0 });
    for (let i = 0; i < 6; i++) await generate(body(i));
    const stats = await request(t.url).get('/admin/cache').set(auth()).expect(200);
    expect(stats.body.exact).toMatchObject({ entries: 4, maxEntries: 4 });
    expect(stats.body.exact.evictions).toBeGreaterThanOrEqual(2);
    expect((await generate(body(0))).headers['x-cache']).toBe('MISS');
    expect((await generate(body(5))).headers['x-cache']).toBe('HIT');
  });
});

/** Issue 17: a hit (or its Age) must not tell one key what another asked, or when. */
describe('cache scope across API keys', () => {
  const ask = (t: TestApp, key: string, prompt: string) =>
    request(t.url).post('/v1/generate').set({ 'X-API-Key': key }).send({ prompt, max_tokens: 8, temperature: 0 }).expect(200);
  const twoKeys = async (t: TestApp): Promise<[string, string]> => {
    const keys = t.app.get(ApiKeysService);
    return [(await keys.create({ name: `a${Date.now()}` })).key, (await keys.create({ name: `b${Date.now()}` })).key];
  };

  describe('CACHE_SCOPE=key (the default), exact and semantic caches on', () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await startTestApp({ SEMANTIC_CACHE_ENABLED: 'true' });
    });
    afterAll(() => t.close());

    it('key B never gets key A\'s answer, nor its Age; key A does', async () => {
      const [a, b] = await twoKeys(t);
      const prompt = 'The secret plan of key A is';
      expect((await ask(t, a, prompt)).headers['x-cache']).toBe('MISS');
      const other = await ask(t, b, prompt);
      expect(other.headers['x-cache']).toBe('MISS');
      expect(other.headers.age).toBeUndefined();
      const same = await ask(t, a, prompt);
      expect(same.headers['x-cache']).toBe('HIT');
      expect(same.headers.age).toMatch(/^\d+$/);
    });
  });

  describe('CACHE_SCOPE=key with only the semantic cache', () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await startTestApp({ CACHE_ENABLED: 'false', SEMANTIC_CACHE_ENABLED: 'true' });
    });
    afterAll(() => t.close());

    it('an identical prompt from another key is not a semantic hit', async () => {
      const [a, b] = await twoKeys(t);
      const prompt = 'Lily found a red ball under the big tree';
      expect((await ask(t, a, prompt)).headers['x-cache']).toBe('MISS');
      expect((await ask(t, b, prompt)).headers['x-cache']).toBe('MISS');
      expect((await ask(t, a, prompt)).headers['x-cache']).toBe('SEMANTIC-HIT');
    });
  });

  describe('CACHE_SCOPE=global', () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await startTestApp({ CACHE_SCOPE: 'global' });
    });
    afterAll(() => t.close());

    it('keys share answers, but Age is only sent to the key whose request made the answer', async () => {
      const [a, b] = await twoKeys(t);
      const prompt = 'A shared question about a cat';
      expect((await ask(t, a, prompt)).headers['x-cache']).toBe('MISS');
      const other = await ask(t, b, prompt);
      expect(other.headers['x-cache']).toBe('HIT');
      expect(other.headers.age).toBeUndefined();
      expect((await ask(t, a, prompt)).headers.age).toMatch(/^\d+$/);
    });
  });
});
