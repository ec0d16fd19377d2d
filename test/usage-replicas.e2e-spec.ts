import { randomBytes } from 'node:crypto';
import http from 'node:http';
import Redis from 'ioredis';
import { Client } from 'pg';
import { ApiKeysService } from '@app/auth';
import { UsageLedgerService } from '@app/usage';
import { runCli } from './support/cli';
import { post, waitFor } from './support/http';
import { metric, scrape } from './support/metrics';
import { startServer, waitForModel } from './support/server-process';
import { TcpProxy } from './support/tcp-proxy';
import { startTestApp, TestApp } from './support/test-app';

const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const SHARED_REDIS = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const SAMPLED = { prompt: 'Once upon a time', max_tokens: 6, ignore_eos: true, temperature: 0.9 };

async function dropSchema(schema: string): Promise<void> {
  const c = new Client({ connectionString: PG_URL });
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await c.end();
  }
}

async function adminUsage(t: TestApp, query: string): Promise<any> {
  const res = await fetch(`${t.url}/admin/usage?${query}`, { headers: { Authorization: `Bearer ${t.key}` } });
  return res.json();
}

describe('usage ledger: two replicas on one PostgreSQL (and Redis budgets)', () => {
  const schema = `usage_e2e_${randomBytes(4).toString('hex')}`;
  const prefix = `test-usage-${randomBytes(4).toString('hex')}:`;
  const shared = { DATABASE_URL: PG_URL, DATABASE_SCHEMA: schema, REDIS_URL: SHARED_REDIS, REDIS_KEY_PREFIX: prefix, CACHE_ENABLED: 'false', USAGE_FLUSH_INTERVAL_MS: '3600000' };
  let a: TestApp;
  let b: TestApp;
  beforeAll(async () => {
    a = await startTestApp(shared);
    b = await startTestApp(shared);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    const redis = new Redis(SHARED_REDIS);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    await redis.quit();
    await dropSchema(schema);
  });

  it('both replicas write the same buckets at once and the sums are exact', async () => {
    const { key, record } = await a.app.get(ApiKeysService).create({ name: 'two-replicas', concurrency: 0 });
    const replies = await Promise.all(Array.from({ length: 12 }, (_, i) => post(i % 2 ? b.url : a.url, '/v1/generate', key, SAMPLED)));
    expect(replies.every((r) => r.status === 200)).toBe(true);
    // Each replica holds its half; flushed together, they upsert the same (key, model, route, hour) row.
    await Promise.all([a.app.get(UsageLedgerService).flush(), b.app.get(UsageLedgerService).flush()]);
    expect(a.app.get(UsageLedgerService).stats().flushes).toBeGreaterThan(0);
    const expected = replies.reduce((s, r) => s + r.body.usage.total_tokens, 0);
    for (const t of [a, b]) {
      const report = await adminUsage(t, `key=${record.id}&group_by=key,route`);
      expect(report.data).toEqual([expect.objectContaining({ key_name: 'two-replicas', route: '/v1/generate', requests: 12, total_tokens: expected, errors: 0 })]);
    }
    const cli = await runCli(['usage', '--key', 'two-replicas', '--json'], { DATABASE_URL: PG_URL, DATABASE_SCHEMA: schema });
    expect(cli.code).toBe(0);
    expect(JSON.parse(cli.stdout).totals).toMatchObject({ requests: 12, total_tokens: expected });
  });

  it('a budget spent through one replica is spent on the other (Redis counters)', async () => {
    const { key } = await a.app.get(ApiKeysService).create({ name: 'shared-budget', budgetMonth: 30 });
    let served = 0;
    for (let i = 0; i < 10; i++) {
      const r = await post(i % 2 ? b.url : a.url, '/v1/generate', key, SAMPLED);
      if (r.status !== 200) {
        expect(r.body.error.code).toBe('budget_exceeded');
        break;
      }
      served++;
    }
    expect(served).toBeGreaterThan(1);
    expect(served).toBeLessThan(10);
    for (const t of [a, b]) expect((await post(t.url, '/v1/generate', key, SAMPLED)).body.error.code).toBe('budget_exceeded');
    const redis = new Redis(SHARED_REDIS);
    try {
      expect(await redis.keys(`${prefix}budget:*`)).toHaveLength(1);
    } finally {
      await redis.quit();
    }
  });
});

describe('usage ledger: database outage', () => {
  const schema = `usage_e2e_${randomBytes(4).toString('hex')}`;
  let proxy: TcpProxy;
  let t: TestApp;
  beforeAll(async () => {
    proxy = await TcpProxy.start(Number(new URL(PG_URL).port || 5432));
    const url = new URL(PG_URL);
    url.port = String(proxy.port);
    // A static key (API_KEYS) does not depend on the store, so requests go on during the outage.
    t = await startTestApp({ DATABASE_URL: url.toString(), DATABASE_SCHEMA: schema, CACHE_ENABLED: 'false', USAGE_FLUSH_INTERVAL_MS: '200' });
  });
  afterAll(async () => {
    await t?.close();
    await proxy?.stop();
    await dropSchema(schema);
  });

  it('buffers while PostgreSQL is unreachable and catches up, exactly, when it returns', async () => {
    const ledger = t.app.get(UsageLedgerService);
    const before = await post(t.url, '/v1/generate', t.key, SAMPLED);
    await waitFor(() => ledger.stats().buffered === 0, 5000);
    await proxy.stop();
    const during = await Promise.all(Array.from({ length: 5 }, () => post(t.url, '/v1/generate', t.key, SAMPLED)));
    expect(during.every((r) => r.status === 200)).toBe(true);
    await waitFor(() => ledger.stats().failures > 0, 10_000);
    expect(ledger.stats().buffered).toBeGreaterThan(0);
    const s = await scrape(t.url);
    expect(metric(s, 'llm_usage_flush_failures_total')).toBeGreaterThan(0);
    expect(metric(s, 'llm_usage_flush_lag_seconds')).toBeGreaterThan(0);
    expect(metric(s, 'llm_usage_dropped_total')).toBe(0);

    await proxy.start();
    await waitFor(() => ledger.stats().buffered === 0, 15_000, 100);
    const report = await adminUsage(t, 'group_by=route');
    const expected = [before, ...during].reduce((sum, r) => sum + r.body.usage.total_tokens, 0);
    expect(report.totals).toMatchObject({ requests: 6, total_tokens: expected, errors: 0 });
    expect(ledger.stats().dropped).toBe(0);
  });
});

/** A stream read to its end (the compiled server's drain test does the same). */
function stream(url: string, key: string, maxTokens: number): { first: Promise<void>; done: Promise<string> } {
  let first!: () => void;
  const firstChunk = new Promise<void>((r) => (first = r));
  const done = new Promise<string>((resolve, reject) => {
    const req = http.request(`${url}/v1/generate/stream`, { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-API-Key': key } });
    req.on('response', (res) => {
      let body = '';
      res.on('data', (d: Buffer) => {
        first();
        body += d.toString();
      });
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify({ prompt: 'Once upon a time', max_tokens: maxTokens, ignore_eos: true, temperature: 0.8 }));
  });
  return { first: firstChunk, done };
}

describe('usage ledger: drain (compiled server, SIGTERM)', () => {
  it('the shutdown flush writes the usage of every request, those that finished during the drain included', async () => {
    const KEY = 'sk-test-usage-drain';
    // An hour between flushes: only the shutdown flush can have written anything.
    const server = await startServer({ API_KEYS: KEY, PARALLEL_SLOTS: '1', DRAIN_TIMEOUT_MS: '20000', USAGE_FLUSH_INTERVAL_MS: '3600000', CACHE_ENABLED: 'false' });
    try {
      await waitForModel(server);
      const quick = await post(server.url, '/v1/generate', KEY, SAMPLED);
      const streams = [stream(server.url, KEY, 300), stream(server.url, KEY, 300)];
      await streams[0].first;
      server.child.kill('SIGTERM');
      const bodies = await Promise.all(streams.map((s) => s.done));
      expect(await server.exited).toEqual({ code: 0, signal: null });
      const completion = bodies.map((b) => JSON.parse(b.trim().split('\n\n').at(-1)!.slice('data: '.length)).usage.total_tokens as number);
      const cli = await runCli(['usage', '--json', '--group-by', 'route'], { DATA_DIR: server.dataDir });
      expect(cli.code).toBe(0);
      const report = JSON.parse(cli.stdout);
      expect(report.data).toEqual([
        expect.objectContaining({ route: '/v1/generate/stream', requests: 2, completion_tokens: 600, total_tokens: completion[0] + completion[1] }),
        expect.objectContaining({ route: '/v1/generate', requests: 1, total_tokens: quick.body.usage.total_tokens }),
      ]);
    } finally {
      await server.stop();
    }
  });
});
