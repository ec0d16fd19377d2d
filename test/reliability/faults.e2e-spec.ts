import { PrivateRedis } from '../support/redis-server';
import { metric, scrape } from '../support/metrics';
import { post, sleep, waitFor } from '../support/http';
import { startServer, ServerProcess, waitForModel } from '../support/server-process';
import { record, size } from './reliability.support';
import { streamOnce, StreamOutcome, tally } from './stream.client';

const KEY = 'sk-reliability-faults-0123456789';

/**
 * Redis stopped and restarted under load, on the compiled server with a private redis-server:
 * the per-IP limit and the response cache work through Redis, keep working per replica while it is
 * down (RATE_LIMIT_FAIL_MODE=open, the default; a cache never fails a request), and use Redis again
 * once it is back, without a restart. Missing/corrupt model and GPU fallback: test/process.e2e-spec.ts.
 */
describe('faults: Redis stopped and restarted during load', () => {
  let redis: PrivateRedis;
  let server: ServerProcess;
  const LIMIT = 12;
  // Short, so that each phase's probe starts in a fresh window without a long wait.
  const WINDOW_MS = 8000;

  beforeAll(async () => {
    redis = await PrivateRedis.start();
    server = await startServer({
      API_KEYS: KEY,
      LOG_LEVEL: 'warn',
      REDIS_URL: redis.url,
      PARALLEL_SLOTS: '2',
      QUEUE_MAX: '16',
      CONTEXT_SIZE: '512',
      RATE_LIMIT_IP_RPM: String(LIMIT),
      RATE_LIMIT_IP_STREAM_RPM: '0',
      RATE_LIMIT_WINDOW_MS: String(WINDOW_MS),
      KEY_DEFAULT_RPM: '0',
      KEY_DEFAULT_CONCURRENCY: '0',
      HEALTH_CHECK_TIMEOUT_MS: '300',
    });
    await waitForModel(server);
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await redis?.stop();
  });

  /** LIMIT+3 requests on /v1/generate: how many were served and how many refused with 429. */
  async function probeLimit(tag: string): Promise<{ ok: number; limited: number; other: number[] }> {
    const r = { ok: 0, limited: 0, other: [] as number[] };
    for (let i = 0; i < LIMIT + 3; i++) {
      const res = await post(server.url, '/v1/generate', KEY, { prompt: `${tag} ${i}`, max_tokens: 2 });
      if (res.status === 200) r.ok++;
      else if (res.status === 429) r.limited++;
      else r.other.push(res.status);
    }
    return r;
  }

  /** The same deterministic request twice on /v1/completions: the X-Cache of each. */
  async function probeCache(tag: string): Promise<string[]> {
    const out: string[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await post(server.url, '/v1/completions', KEY, { prompt: `cache probe ${tag}`, max_tokens: 4, temperature: 0 });
      out.push(`${res.status} ${res.headers.get('x-cache')}`);
    }
    return out;
  }

  it('limits and caches go through Redis, keep serving while it is down, and use it again once it is back', async () => {
    await sleep(0);
    // Background load for the whole test: streaming clients, 8 at a time.
    const load: StreamOutcome[] = [];
    let running = true;
    const background = (async () => {
      let i = 0;
      while (running) {
        load.push(...(await Promise.all(Array.from({ length: 8 }, () =>
          streamOnce(server.url, '/v1/generate/stream', KEY, { prompt: `load ${i++}`, max_tokens: 24 }),
        ))));
      }
    })();

    const up = { limit: await probeLimit('up'), cache: await probeCache('up') };
    const ready = async (): Promise<number> => (await fetch(`${server.url}/health/ready`)).status;

    await redis.stop();
    await waitFor(async () => (await ready()) === 503, 10_000);
    const downFor = Date.now();
    await sleep(WINDOW_MS + 300);
    const down = { limit: await probeLimit('down'), cache: await probeCache('down') };
    const scrapeDown = await scrape(server.url);
    await sleep(size(500, 5000));

    await redis.start();
    const restarted = Date.now();
    await waitFor(async () => (await ready()) === 200, 20_000);
    const readyMs = Date.now() - restarted;
    const outageMs = restarted - downFor;
    // The cache's client reconnects on its own: poll until a write and a read go through Redis again.
    let attempts = 0;
    let backCache: string[] = [];
    await waitFor(async () => {
      backCache = await probeCache(`back ${attempts++}`);
      return backCache[1] === '200 HIT';
    }, 60_000);
    const cacheMs = Date.now() - restarted;
    // A fresh window: the counts of the outage, kept in this process's memory, are behind it.
    await sleep(WINDOW_MS + 300);
    const back = { limit: await probeLimit('back'), cache: backCache };
    const scrapeBack = await scrape(server.url);

    running = false;
    await background;
    const t = tally(load);
    console.log('redis fault', { up, down, back, load: t, readyMs, cacheMs, attempts, outageMs });

    // Configured: LIMIT per window per IP, answered from Redis when up, from memory when down.
    for (const phase of [up, down, back]) {
      expect(phase.limit).toEqual({ ok: LIMIT, limited: 3, other: [] });
    }
    expect(up.cache).toEqual(['200 MISS', '200 HIT']);
    expect(down.cache.every((c) => c.startsWith('200 '))).toBe(true);
    expect(back.cache).toEqual(['200 MISS', '200 HIT']);
    expect(metric(scrapeDown, 'llm_dependency_up', { dependency: 'redis' })).toBe(0);
    expect(metric(scrapeBack, 'llm_dependency_up', { dependency: 'redis' })).toBe(1);
    expect(load.filter((o) => o.status !== 200 || !o.complete)).toEqual([]);

    const fmt = (p: typeof up): string => `limit ${p.limit.ok} served + ${p.limit.limited} × 429 of ${LIMIT + 3}; cache ${p.cache.join(', ')}`;
    record({ section: 'faults', check: `Redis up (RATE_LIMIT_IP_RPM ${LIMIT})`, tried: LIMIT + 5, result: fmt(up), ok: true });
    record({ section: 'faults', check: 'Redis killed (SIGKILL) under load, RATE_LIMIT_FAIL_MODE=open', tried: LIMIT + 5, result: `${fmt(down)}; /health/ready 503, llm_dependency_up{dependency="redis"} 0`, ok: true });
    record({ section: 'faults', check: 'Redis restarted on the same port, server not restarted', tried: LIMIT + 5, result: `${fmt(back)}; /health/ready 200 ${readyMs} ms after the restart, first cache HIT through Redis after ${cacheMs} ms (${attempts} probes); outage ${(outageMs / 1000).toFixed(1)} s`, ok: true });
    record({ section: 'faults', check: 'streaming load during the Redis outage (8 concurrent clients)', tried: load.length, result: `${t.complete ?? 0} complete, ${load.length - (t.complete ?? 0)} not`, ok: true });
  }, 180_000);
});

describe('faults: database unreachable at start', () => {
  it('starts with a clear error, readiness 503, stored keys 503 (fail closed), static keys served, password never shown', async () => {
    const server = await startServer({
      API_KEYS: KEY,
      LOG_LEVEL: 'info',
      DATABASE_URL: 'postgres://postgres:s3cret-pw@127.0.0.1:1/test',
      DATABASE_SCHEMA: 'reliability_unreachable',
    });
    try {
      await waitForModel(server);
      const ready = await fetch(`${server.url}/health/ready`);
      const unknown = await post(server.url, '/v1/generate', 'sk-not-a-static-key-0000000000', { prompt: 'Hi', max_tokens: 2 });
      const stat = await post(server.url, '/v1/generate', KEY, { prompt: 'Hi', max_tokens: 2 });
      const logLine = server.output().split('\n').find((l) => l.includes('key_store unavailable')) ?? '';
      console.log('db unreachable', { ready: ready.status, unknown: [unknown.status, unknown.body?.error?.code], static: stat.status, logLine });
      expect(ready.status).toBe(503);
      expect(unknown.status).toBe(503);
      expect(unknown.body.error.type).toBe('service_unavailable_error');
      expect(stat.status).toBe(200);
      expect(logLine).toContain('ECONNREFUSED');
      expect(server.output()).not.toContain('s3cret-pw');
      record({
        section: 'faults',
        check: 'PostgreSQL unreachable at start (DATABASE_URL to a closed port)',
        tried: 1,
        result: `process stays up; log: "key_store unavailable (connect ECONNREFUSED …)"; /health/ready ${ready.status}; key not cached → ${unknown.status} ${unknown.body.error.code}; static API_KEYS key → ${stat.status}; password absent from output`,
        ok: true,
      });
    } finally {
      await server.stop();
    }
  }, 60_000);
});
