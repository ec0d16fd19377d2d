import { randomBytes } from 'node:crypto';
import Redis from 'ioredis';
import { Client } from 'pg';
import { ApiKeysService, AuthStatsService, KeyAuthService } from '@app/auth';
import { openStream, post, waitFor } from './support/http';
import { RedisChild } from './support/redis-server';
import { TcpProxy } from './support/tcp-proxy';
import { startTestApp, TestApp } from './support/test-app';

const SHARED_REDIS = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const HI = { prompt: 'Hi', max_tokens: 2 };

async function dropSchema(schema: string): Promise<void> {
  const c = new Client({ connectionString: PG_URL });
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await c.end();
  }
}

describe('two replicas on one Redis and one PostgreSQL', () => {
  const prefix = `test-keys-${randomBytes(4).toString('hex')}:`;
  const schema = `keys_e2e_${randomBytes(4).toString('hex')}`;
  const shared = { REDIS_URL: SHARED_REDIS, REDIS_KEY_PREFIX: prefix, DATABASE_URL: PG_URL, DATABASE_SCHEMA: schema, CONTEXT_SIZE: '2048' };
  let a: TestApp;
  let b: TestApp;
  beforeAll(async () => {
    a = await startTestApp(shared);
    b = await startTestApp(shared);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    // Only this suite's keys: never flush the shared Redis.
    const redis = new Redis(SHARED_REDIS);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    await redis.quit();
    await dropSchema(schema);
  });

  it('a key created through one replica works on both, and its request limit holds in total', async () => {
    const { key } = await a.app.get(ApiKeysService).create({ name: 'shared', rpm: 4 });
    const codes: number[] = [];
    for (let i = 0; i < 8; i++) codes.push((await post(i % 2 ? b.url : a.url, '/v1/generate', key, HI)).status);
    expect(codes).toEqual([200, 200, 200, 200, 429, 429, 429, 429]);
    const redis = new Redis(SHARED_REDIS);
    try {
      expect((await redis.keys(`${prefix}*`)).length).toBeGreaterThan(0);
    } finally {
      await redis.quit();
    }
  });

  it('tokens and concurrency are shared too', async () => {
    const { key } = await a.app.get(ApiKeysService).create({ name: 'shared-2', tpm: 50, concurrency: 1 });
    const story = { prompt: 'Once upon a time', max_tokens: 20, ignore_eos: true };
    expect((await post(a.url, '/v1/generate', key, story)).status).toBe(200);
    const second = await post(b.url, '/v1/generate', key, story);
    expect(second.headers.get('x-ratelimit-remaining-tokens')).toBe('25');
    expect((await post(a.url, '/v1/generate', key, story)).body.error.code).toBe('token_rate_limit_exceeded');

    const { key: k2 } = await a.app.get(ApiKeysService).create({ name: 'shared-3', concurrency: 1 });
    const held = await openStream(a.url, '/v1/generate/stream', k2, { prompt: 'Once', max_tokens: 2000, ignore_eos: true });
    expect(held.status).toBe(200);
    expect((await post(b.url, '/v1/generate', k2, HI)).body.error.code).toBe('concurrency_limit_exceeded');
    held.drop();
    await waitFor(async () => (await post(b.url, '/v1/generate', k2, HI)).status === 200, 5000);
  });

  it('last-used times reach the database in batches', async () => {
    const service = a.app.get(ApiKeysService);
    const { key, record } = await service.create({ name: 'touched' });
    expect((await post(b.url, '/v1/generate', key, HI)).status).toBe(200);
    expect((await service.resolve(record.id)).lastUsedAt).toBeNull(); // not written on the request path
    await b.app.get(KeyAuthService).flushLastUsed();
    expect((await service.resolve(record.id)).lastUsedAt).toBeInstanceOf(Date);
  });
});

describe('Redis stopped mid-test', () => {
  let redis: RedisChild;
  let closed: TestApp;
  let open: TestApp;
  beforeAll(async () => {
    redis = await RedisChild.start();
    const env = { REDIS_URL: redis.url, KEY_DEFAULT_RPM: '3', RATE_LIMIT_WINDOW_MS: '60000' };
    closed = await startTestApp({ ...env, RATE_LIMIT_FAIL_MODE: 'closed' });
    open = await startTestApp({ ...env, RATE_LIMIT_FAIL_MODE: 'open', REDIS_KEY_PREFIX: 'open:' });
  });
  afterAll(async () => {
    await closed?.close();
    await open?.close();
    await redis?.stop();
  });

  it('fail-closed answers 503 (never 500), fail-open keeps limiting in memory; both recover when Redis returns', async () => {
    expect((await post(closed.url, '/v1/generate', closed.key, HI)).status).toBe(200);
    expect((await post(open.url, '/v1/generate', open.key, HI)).status).toBe(200);

    await redis.stop();
    const started = Date.now();
    const refused = await post(closed.url, '/v1/generate', closed.key, HI);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(refused.status).toBe(503);
    expect(refused.body).toEqual({
      error: { message: 'Rate limiting is unavailable; retry shortly', type: 'service_unavailable_error', code: 'rate_limiter_unavailable' },
    });
    expect(refused.headers.get('retry-after')).toBe('1');
    const stats = closed.app.get(AuthStatsService).stats();
    expect(stats.failures.redis).toBeGreaterThan(0);
    expect(stats.degraded.redis).toBe(true);

    // Open: served, and the key's limit (3 per window) still holds, per replica, in memory.
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await post(open.url, '/v1/generate', open.key, HI)).status);
    expect(codes).toEqual([200, 200, 200, 429]);
    expect(open.app.get(AuthStatsService).stats().failures.redis).toBeGreaterThan(0);

    await redis.start();
    await waitFor(async () => (await post(closed.url, '/v1/generate', closed.key, HI)).status === 200, 15_000, 200);
    expect(closed.app.get(AuthStatsService).stats().degraded.redis).toBe(false);
    // The open replica is back on Redis, which restarted empty: a fresh window.
    await waitFor(() => !open.app.get(AuthStatsService).stats().degraded.redis, 15_000, 100);
    const back = await post(open.url, '/v1/generate', open.key, HI);
    expect(back.status).toBe(200);
    expect(open.app.get(AuthStatsService).stats().degraded.redis).toBe(false);
  });
});

describe('key store (PostgreSQL) unreachable mid-test', () => {
  const schema = `keys_e2e_${randomBytes(4).toString('hex')}`;
  let proxy: TcpProxy;
  let closed: TestApp;
  let open: TestApp;
  beforeAll(async () => {
    proxy = await TcpProxy.start(Number(new URL(PG_URL).port || 5432));
    const url = new URL(PG_URL);
    url.port = String(proxy.port);
    // KEY_CACHE_TTL_MS=0: every request reads the store, so the outage shows at once.
    const env = { DATABASE_URL: url.toString(), DATABASE_SCHEMA: schema, KEY_CACHE_TTL_MS: '0' };
    closed = await startTestApp({ ...env, KEY_STORE_FAIL_MODE: 'closed' });
    open = await startTestApp({ ...env, KEY_STORE_FAIL_MODE: 'open' });
  });
  afterAll(async () => {
    await closed?.close();
    await open?.close();
    await proxy?.stop();
    await dropSchema(schema);
  });

  it('closed: 503 (never 401 or 500); open: verified keys keep working, unknown ones get 503; both recover', async () => {
    const service = closed.app.get(ApiKeysService);
    const { key } = await service.create({ name: 'pg-outage' });
    const { key: neverSeen } = await service.create({ name: 'never-seen' });
    expect((await post(closed.url, '/v1/generate', key, HI)).status).toBe(200);
    expect((await post(open.url, '/v1/generate', key, HI)).status).toBe(200);
    // Static keys do not depend on the store.
    await proxy.stop();

    const refused = await post(closed.url, '/v1/generate', key, HI);
    expect(refused.status).toBe(503);
    expect(refused.body.error).toMatchObject({ type: 'service_unavailable_error', code: 'key_store_unavailable' });
    expect(refused.headers.get('retry-after')).toBe('5');
    expect((await post(closed.url, '/v1/generate', closed.key, HI)).status).toBe(200);
    expect(closed.app.get(AuthStatsService).stats().failures.key_store).toBeGreaterThan(0);

    expect((await post(open.url, '/v1/generate', key, HI)).status).toBe(200);
    expect((await post(open.url, '/v1/generate', neverSeen, HI)).status).toBe(503);

    await proxy.start();
    await waitFor(async () => (await post(closed.url, '/v1/generate', key, HI)).status === 200, 15_000, 200);
    expect((await post(open.url, '/v1/generate', neverSeen, HI)).status).toBe(200);
    expect(closed.app.get(AuthStatsService).stats().degraded.key_store).toBe(false);
  });
});
