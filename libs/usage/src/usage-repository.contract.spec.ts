import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@nestjs/common';
import { Client } from 'pg';
import { budgetPeriods } from './budget.service';
import { HOUR_MS } from './clock';
import { PostgresUsageRepository } from './postgres-usage.repository';
import { SqliteUsageRepository } from './sqlite-usage.repository';
import { UsageRepository } from './usage.repository';
import { UsageBucket } from './usage.types';

/** The real PostgreSQL of the CI machine; each run works in its own schema and drops it. */
const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const T0 = Date.parse('2026-03-31T22:00:00.000Z');

interface Backend {
  readonly name: string;
  /** A fresh store; `shared` opens a second connection (another replica) to the last one. */
  open(shared?: boolean): Promise<UsageRepository>;
  cleanup(): Promise<void>;
}

function sqlite(): Backend {
  const dir = mkdtempSync(join(tmpdir(), 'usage-contract-'));
  let file = '';
  let n = 0;
  const opened: UsageRepository[] = [];
  return {
    name: 'SQLite',
    async open(shared = false) {
      if (!shared) file = join(dir, `usage-${n++}.db`);
      const repo = new SqliteUsageRepository(file);
      opened.push(repo);
      return repo;
    },
    cleanup: async () => void (await Promise.all(opened.map((r) => r.close()))),
  };
}

function postgres(): Backend {
  const schemas: string[] = [];
  const opened: UsageRepository[] = [];
  return {
    name: 'PostgreSQL',
    async open(shared = false) {
      if (!shared) schemas.push(`usage_contract_${randomBytes(6).toString('hex')}`);
      const repo = new PostgresUsageRepository({ connectionString: PG_URL, schema: schemas[schemas.length - 1] });
      opened.push(repo);
      return repo;
    },
    async cleanup() {
      await Promise.all(opened.map((r) => r.close()));
      const c = new Client({ connectionString: PG_URL });
      await c.connect();
      try {
        for (const s of schemas) await c.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
      } finally {
        await c.end();
      }
    },
  };
}

function bucket(over: Partial<UsageBucket>): UsageBucket {
  return { keyId: 'key_a', model: 'm1', route: '/v1/generate', hour: T0, requests: 1, promptTokens: 10, cachedPromptTokens: 2, completionTokens: 5, cacheHits: 0, errors: 0, ...over };
}

beforeAll(() => Logger.overrideLogger(false));

describe.each([sqlite, postgres])('usage store contract: %p', (make) => {
  const backend = make();
  let repo: UsageRepository;
  beforeEach(async () => {
    repo = await backend.open();
    await repo.ready();
  });
  afterAll(() => backend.cleanup());

  it(`(${backend.name}) adds batches into per key/model/route/hour buckets, each batch exactly once`, async () => {
    const batch = randomUUID();
    await repo.write(batch, [bucket({}), bucket({ route: '/v1/chat/completions', completionTokens: 70 })]);
    await repo.write(batch, [bucket({})]); // a retry of a batch that was written: ignored
    await repo.write(randomUUID(), [bucket({ requests: 2, promptTokens: 1, cachedPromptTokens: 0, completionTokens: 1, cacheHits: 1, errors: 1 })]);
    await repo.write(randomUUID(), []);
    const rows = await repo.query({ groupBy: ['key', 'model', 'route', 'hour'] });
    expect(rows).toEqual([
      { keyId: 'key_a', model: 'm1', route: '/v1/chat/completions', hour: T0, requests: 1, promptTokens: 10, cachedPromptTokens: 2, completionTokens: 70, cacheHits: 0, errors: 0 },
      { keyId: 'key_a', model: 'm1', route: '/v1/generate', hour: T0, requests: 3, promptTokens: 11, cachedPromptTokens: 2, completionTokens: 6, cacheHits: 1, errors: 1 },
    ]);
  });

  it(`(${backend.name}) filters and groups by key, model, route, UTC day and hour`, async () => {
    await repo.write(randomUUID(), [
      bucket({}),
      bucket({ hour: T0 + HOUR_MS }),
      bucket({ hour: T0 + 2 * HOUR_MS }), // 2026-04-01 00:00 UTC: the next day
      bucket({ keyId: 'key_b', model: 'm2', hour: T0 + 2 * HOUR_MS, promptTokens: 100 }),
    ]);
    expect(await repo.query({ groupBy: ['day'] })).toEqual([
      expect.objectContaining({ day: Date.parse('2026-03-31T00:00:00Z'), requests: 2, promptTokens: 20 }),
      expect.objectContaining({ day: Date.parse('2026-04-01T00:00:00Z'), requests: 2, promptTokens: 110 }),
    ]);
    // Heaviest group first when not grouped by time.
    expect((await repo.query({ groupBy: ['key'] })).map((r) => [r.keyId, r.requests, r.promptTokens + r.completionTokens])).toEqual([
      ['key_b', 1, 105],
      ['key_a', 3, 45],
    ]);
    expect(await repo.query({ groupBy: ['model'], keyId: 'key_a', from: T0 + HOUR_MS, to: T0 + 3 * HOUR_MS })).toEqual([
      { model: 'm1', requests: 2, promptTokens: 20, cachedPromptTokens: 4, completionTokens: 10, cacheHits: 0, errors: 0 },
    ]);
    expect(await repo.query({ groupBy: ['route'], model: 'nope' })).toEqual([]);
    expect(await repo.query({ groupBy: [] })).toEqual([{ requests: 4, promptTokens: 130, cachedPromptTokens: 8, completionTokens: 20, cacheHits: 0, errors: 0 }]);
    expect(await repo.ledgerTokens('key_a', T0, T0 + 2 * HOUR_MS)).toBe(30);
  });

  it(`(${backend.name}) two writers (replicas) on one store add up, batch after batch, concurrently`, async () => {
    const other = await backend.open(true);
    await other.ready();
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) {
      const target = i % 2 ? repo : other;
      writes.push(target.write(randomUUID(), [bucket({}), bucket({ keyId: 'key_b' }), bucket({ route: '/v1/completions' })]));
    }
    await Promise.all(writes);
    const rows = await repo.query({ groupBy: ['key', 'route'] });
    expect(rows.map((r) => [r.keyId, r.route, r.requests, r.promptTokens])).toEqual(
      expect.arrayContaining([
        ['key_a', '/v1/generate', 20, 200],
        ['key_b', '/v1/generate', 20, 200],
        ['key_a', '/v1/completions', 20, 200],
      ]),
    );
  });

  it(`(${backend.name}) budget counters: seeded from the ledger, refused once spent, adjusted, per period`, async () => {
    await repo.write(randomUUID(), [bucket({ hour: T0, promptTokens: 60, completionTokens: 20 })]); // 80 tokens on 2026-03-31
    const now = T0 + 30 * 60_000;
    const periods = budgetPeriods({ day: 100, month: 1000 }, now);
    expect(periods.map((p) => p.id)).toEqual(['day:2026-03-31', 'month:2026-03']);
    expect(await repo.readBudget('key_a', periods, now)).toEqual([80, 80]);
    expect(await repo.reserveBudget('key_a', periods, 50, now)).toEqual({ ok: true, used: [80, 80] });
    // 130 >= 100: the day is spent; nothing is added to either counter.
    expect(await repo.reserveBudget('key_a', periods, 1, now)).toEqual({ ok: false, used: [130, 130] });
    await repo.adjustBudget('key_a', periods.map((p) => p.id), -45, now); // the request used 5 of its 50
    expect(await repo.readBudget('key_a', periods, now)).toEqual([85, 85]);
    await repo.adjustBudget('key_a', ['day:2026-03-31'], -1000, now);
    expect(await repo.readBudget('key_a', periods, now)).toEqual([0, 85]);
    // The next day starts from the ledger's (empty) day, the month goes on.
    const tomorrow = budgetPeriods({ day: 100, month: 1000 }, Date.parse('2026-04-01T00:00:00Z'));
    expect(await repo.readBudget('key_a', tomorrow, Date.parse('2026-04-01T00:00:00Z'))).toEqual([0, 0]);
    await repo.prune(Date.parse('2027-01-01T00:00:00Z'));
    expect(await repo.readBudget('key_a', periods, now)).toEqual([80, 80]); // pruned, then seeded again
  });

  it(`(${backend.name}) parallel reservations never take more than one beyond the limit`, async () => {
    const other = await backend.open(true);
    const now = T0;
    const periods = budgetPeriods({ day: 1000, month: 0 }, now);
    const outcomes = await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 ? repo : other).reserveBudget('key_p', periods, 300, now)));
    // Admitted while something was left: 0, 300, 600, 900; the fourth ends 200 beyond, less than one reservation.
    expect(outcomes.filter((o) => o.ok)).toHaveLength(4);
    expect(await repo.readBudget('key_p', periods, now)).toEqual([1200]);
  });

  it(`(${backend.name}) migrations are idempotent and safe to run concurrently`, async () => {
    const other = await backend.open(true);
    await Promise.all([repo.migrate(), other.migrate(), repo.migrate()]);
    await repo.write(randomUUID(), [bucket({})]);
    expect(await other.query({ groupBy: [] })).toEqual([expect.objectContaining({ requests: 1 })]);
  });
});
