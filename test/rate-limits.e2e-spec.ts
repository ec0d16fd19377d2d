import { ApiKeysService, AuthStatsService, CreateKeyOptions } from '@app/auth';
import { InferenceService } from '@app/inference';
import { post, openStream, sleep, waitFor } from './support/http';
import { startTestApp, TestApp } from './support/test-app';

/** 5 prompt tokens (BOS included) + 20 completion tokens = 25, every time. */
const STORY = { prompt: 'Once upon a time', max_tokens: 20, temperature: 0, ignore_eos: true };
const LONG = { prompt: 'Once upon a time', max_tokens: 2000, ignore_eos: true };

const createKey = async (t: TestApp, options: Partial<CreateKeyOptions> = {}): Promise<string> =>
  (await t.app.get(ApiKeysService).create({ name: `k${Math.random().toString(36).slice(2, 10)}`, ...options })).key;

describe('per-IP limits', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ RATE_LIMIT_IP_RPM: '3', RATE_LIMIT_IP_STREAM_RPM: '2', KEY_DEFAULT_RPM: '0' });
  });
  afterAll(() => t.close());

  it('counts down in X-RateLimit-* headers, then refuses with a 429 envelope and Retry-After', async () => {
    const remaining: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await post(t.url, '/v1/generate', t.key, { prompt: 'Hi', max_tokens: 2 });
      expect(r.status).toBe(200);
      expect(r.headers.get('x-ratelimit-limit')).toBe('3');
      expect(r.headers.get('x-ratelimit-limit-requests')).toBe('3');
      remaining.push(r.headers.get('x-ratelimit-remaining') as string);
      expect(Number(r.headers.get('x-ratelimit-reset'))).toBeGreaterThan(0);
    }
    expect(remaining).toEqual(['2', '1', '0']);
    const refused = await post(t.url, '/v1/generate', t.key, { prompt: 'Hi', max_tokens: 2 });
    expect(refused.status).toBe(429);
    expect(refused.body).toEqual({
      error: {
        message: expect.stringMatching(/^Rate limit reached for this client address: 3 requests per 60 s; retry in \d+ s$/),
        type: 'rate_limit_error',
        code: 'rate_limit_exceeded',
      },
    });
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(refused.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    expect(refused.headers.get('x-ratelimit-reset-requests')).toBe(String(retryAfter));
    expect(t.app.get(AuthStatsService).stats().rateLimited.ip_requests).toBeGreaterThanOrEqual(1);
  });

  it('a spoofed X-Forwarded-For from a peer that is not a trusted proxy does not escape the limit', async () => {
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await post(t.url, '/v1/completions', t.key, { prompt: 'Hi', max_tokens: 2 }, { 'X-Forwarded-For': `203.0.113.${i + 1}` });
      codes.push(r.status);
    }
    expect(codes).toEqual([200, 200, 200, 429, 429]);
  });

  it('streaming requests have their own, lower limit (the seed: 50/min stream, 100/min generate)', async () => {
    const codes: number[] = [];
    for (let i = 0; i < 3; i++) codes.push((await post(t.url, '/v1/generate/stream', t.key, { prompt: 'Hi', max_tokens: 2 })).status);
    expect(codes).toEqual([200, 200, 429]);
  });

  it('health and metrics paths are not limited', async () => {
    for (let i = 0; i < 5; i++) expect((await fetch(`${t.url}/health`)).status).toBe(200);
  });
});

describe('per-IP limits behind a trusted proxy', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ RATE_LIMIT_IP_RPM: '2', KEY_DEFAULT_RPM: '0', TRUSTED_PROXIES: '127.0.0.1' });
  });
  afterAll(() => t.close());

  it('the client address comes from X-Forwarded-For, right to left up to the first untrusted hop', async () => {
    const send = (xff: string): Promise<number> =>
      post(t.url, '/v1/generate', t.key, { prompt: 'Hi', max_tokens: 2 }, { 'X-Forwarded-For': xff }).then((r) => r.status);
    // Two clients behind the proxy: separate buckets.
    expect([await send('198.51.100.7'), await send('198.51.100.7'), await send('198.51.100.7')]).toEqual([200, 200, 429]);
    expect(await send('198.51.100.8')).toBe(200);
    // A client that prepends fake hops is still itself (the proxy appended its real address).
    expect([await send('1.1.1.1, 198.51.100.9'), await send('2.2.2.2, 198.51.100.9'), await send('3.3.3.3, 198.51.100.9')]).toEqual([200, 200, 429]);
  });
});

describe('per-key limits', () => {
  let t: TestApp;
  beforeAll(async () => {
    // Cache hits cost no model tokens: these tests repeat one request and must reach the model.
    t = await startTestApp({ PARALLEL_SLOTS: '2', CONTEXT_SIZE: '2048', CACHE_ENABLED: 'false' });
  });
  afterAll(() => t.close());

  it('the tokens-per-window limit trips after the right number of tokens and says so in headers', async () => {
    const key = await createKey(t, { tpm: 100 });
    const remaining: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await post(t.url, '/v1/generate', key, STORY);
      expect(r.status).toBe(200);
      expect(r.body.usage.total_tokens).toBe(25);
      expect(r.headers.get('x-ratelimit-limit-tokens')).toBe('100');
      remaining.push(r.headers.get('x-ratelimit-remaining-tokens') as string);
    }
    // Each header is the budget before the request: 100 tokens in, 25 charged per request.
    expect(remaining).toEqual(['100', '75', '50', '25']);
    const refused = await post(t.url, '/v1/generate', key, STORY);
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ type: 'rate_limit_error', code: 'token_rate_limit_exceeded' });
    expect(refused.body.error.message).toMatch(/100 of 100 tokens used/);
    expect(refused.headers.get('x-ratelimit-remaining-tokens')).toBe('0');
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(refused.headers.get('x-ratelimit-reset-tokens')).toBe(String(retryAfter));
  });

  it('streams and OpenAI routes are charged too, before the client sees the end', async () => {
    const key = await createKey(t, { tpm: 60 });
    const stream = await post(t.url, '/v1/generate/stream', key, STORY);
    expect(stream.status).toBe(200);
    const chat = await post(t.url, '/v1/completions', key, { ...STORY, model: 'stories260K' });
    expect(chat.status).toBe(200);
    expect(chat.headers.get('x-ratelimit-remaining-tokens')).toBe('35');
    expect(chat.body.usage.total_tokens).toBe(25);
    // 10 tokens left, and the request may use 25: refused up front rather than overshooting.
    const third = await post(t.url, '/v1/completions', key, { ...STORY, model: 'stories260K' });
    expect(third.status).toBe(429);
    expect(third.headers.get('x-ratelimit-remaining-tokens')).toBe('10');
    expect((await post(t.url, '/v1/generate', key, STORY)).status).toBe(429);
  });

  it('parallel requests cannot overshoot the tokens-per-window limit: prompt + max_tokens are reserved at admission', async () => {
    const key = await createKey(t, { tpm: 100 });
    const results = await Promise.all(Array.from({ length: 8 }, () => post(t.url, '/v1/generate', key, STORY)));
    const served = results.filter((r) => r.status === 200);
    const spent = served.reduce((n, r) => n + r.body.usage.total_tokens, 0);
    expect(results.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 429, 429, 429, 429]);
    expect(spent).toBe(100);
    for (const r of results.filter((x) => x.status === 429)) {
      expect(r.body.error.code).toBe('token_rate_limit_exceeded');
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    }
  });

  it('a reservation is settled to the real count; a request larger than the whole limit is refused with what to change', async () => {
    const key = await createKey(t, { tpm: 100 });
    // max_tokens 50 reserved (55 with the prompt), but the stop string ends it after a few tokens.
    const early = await post(t.url, '/v1/generate', key, { prompt: 'Once upon a time', max_tokens: 50, temperature: 0, stop_sequences: [' '] });
    expect(early.status).toBe(200);
    const used = early.body.usage.total_tokens as number;
    expect(used).toBeLessThan(20);
    const next = await post(t.url, '/v1/generate', key, { prompt: 'Hi', max_tokens: 1 });
    expect(next.headers.get('x-ratelimit-remaining-tokens')).toBe(String(100 - used));
    const huge = await post(t.url, '/v1/generate', key, { prompt: 'Once upon a time', max_tokens: 500 });
    expect(huge.status).toBe(429);
    expect(huge.body.error.message).toMatch(/may use up to 505 tokens, more than this API key's limit of 100 tokens per 60 s; lower max_tokens/);
    expect(huge.headers.get('retry-after')).toBeNull();
  });

  it('embeddings are charged in tokens', async () => {
    const key = await createKey(t, { tpm: 1000 });
    const emb = await post(t.url, '/v1/embeddings', key, { input: ['Once upon a time there was a dog', 'and a cat'] });
    expect(emb.status).toBe(200);
    const tokens = emb.body.usage.total_tokens as number;
    expect(tokens).toBeGreaterThan(5);
    const next = await post(t.url, '/v1/embeddings', key, { input: 'x' });
    expect(next.headers.get('x-ratelimit-remaining-tokens')).toBe(String(1000 - tokens));
    const small = await createKey(t, { tpm: 5 });
    const refused = await post(t.url, '/v1/embeddings', small, { input: 'Once upon a time there was a little dog named Max' });
    expect([refused.status, refused.body.error?.code]).toEqual([429, 'token_rate_limit_exceeded']);
  });

  it('concurrent requests per key: the slot is held while streaming and freed when the client disconnects', async () => {
    const key = await createKey(t, { concurrency: 1 });
    const inference = t.app.get(InferenceService);
    const first = await openStream(t.url, '/v1/generate/stream', key, LONG);
    expect(first.status).toBe(200);
    const second = await post(t.url, '/v1/generate', key, { prompt: 'Hi', max_tokens: 2 });
    expect(second.status).toBe(429);
    expect(second.body.error.code).toBe('concurrency_limit_exceeded');
    expect(second.headers.get('retry-after')).toBe('1');
    first.drop();
    await waitFor(() => inference.scheduler.busySlots === 0);
    await waitFor(async () => (await post(t.url, '/v1/generate', key, { prompt: 'Hi', max_tokens: 2 })).status === 200, 3000);
    // Finished requests give their slot back too.
    for (let i = 0; i < 3; i++) expect((await post(t.url, '/v1/generate', key, { prompt: 'Hi', max_tokens: 2 })).status).toBe(200);
    // So do refused ones (validation error after the slot was taken).
    expect((await post(t.url, '/v1/generate', key, { prompt: '' })).status).toBe(400);
    expect((await post(t.url, '/v1/generate', key, { prompt: 'Hi', max_tokens: 2 })).status).toBe(200);
  });

  it('a high-priority key is served before normal ones waiting in the queue', async () => {
    const busy = await createKey(t, { concurrency: 0 });
    const normal = await createKey(t, { priority: 'normal' });
    const high = await createKey(t, { priority: 'high' });
    const inference = t.app.get(InferenceService);
    // Fill both slots, then queue a normal request before a high one.
    const holders = [await openStream(t.url, '/v1/generate/stream', busy, LONG), await openStream(t.url, '/v1/generate/stream', busy, LONG)];
    const finished: string[] = [];
    const normalDone = post(t.url, '/v1/generate', normal, { prompt: 'Hi', max_tokens: 4 }).then((r) => finished.push(`normal:${r.status}`));
    await waitFor(() => inference.scheduler.queueDepth === 1);
    const highDone = post(t.url, '/v1/generate', high, { prompt: 'Hi', max_tokens: 4 }).then((r) => finished.push(`high:${r.status}`));
    await waitFor(() => inference.scheduler.queueDepth === 2);
    holders[0].drop();
    await Promise.all([normalDone, highDone]);
    holders[1].drop();
    expect(finished).toEqual(['high:200', 'normal:200']);
  });

  it('the key requests-per-window limit holds across routes', async () => {
    const key = await createKey(t, { rpm: 2 });
    expect((await post(t.url, '/v1/generate', key, { prompt: 'Hi', max_tokens: 2 })).status).toBe(200);
    expect((await post(t.url, '/v1/completions', key, { prompt: 'Hi', max_tokens: 2 })).status).toBe(200);
    const refused = await post(t.url, '/v1/chat/completions', key, { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
    expect(refused.status).toBe(429);
    expect(refused.body.error.message).toMatch(/^Rate limit reached for this API key: 2 requests per 60 s/);
  });
});

describe('Retry-After', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ RATE_LIMIT_WINDOW_MS: '2000' });
  });
  afterAll(() => t.close());

  it('for requests: refused until Retry-After has passed, served right after', async () => {
    const key = await createKey(t, { rpm: 2 });
    await post(t.url, '/v1/generate', key, { prompt: 'Hi', max_tokens: 2 });
    await post(t.url, '/v1/generate', key, { prompt: 'Hi', max_tokens: 2 });
    const refused = await post(t.url, '/v1/generate', key, { prompt: 'Hi', max_tokens: 2 });
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBe(2);
    const at = Date.now();
    await sleep(retryAfter * 1000 - 700);
    expect((await post(t.url, '/v1/generate', key, { prompt: 'Hi', max_tokens: 2 })).status).toBe(429);
    await sleep(Math.max(0, at + retryAfter * 1000 + 50 - Date.now()));
    expect((await post(t.url, '/v1/generate', key, { prompt: 'Hi', max_tokens: 2 })).status).toBe(200);
  });

  it('for tokens: refused until the token window ends, served right after', async () => {
    // 25 tokens per request: the second does not fit in what is left.
    const key = await createKey(t, { tpm: 30 });
    // Past the cache: a hit costs no model tokens.
    const fresh = { 'Cache-Control': 'no-cache' };
    expect((await post(t.url, '/v1/generate', key, STORY, fresh)).status).toBe(200);
    const refused = await post(t.url, '/v1/generate', key, STORY, fresh);
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(2);
    await sleep(retryAfter * 1000 + 50);
    expect((await post(t.url, '/v1/generate', key, STORY, fresh)).status).toBe(200);
  });
});
