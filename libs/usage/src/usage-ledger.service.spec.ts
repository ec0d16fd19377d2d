import { Logger } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { AppConfig } from '@app/common';
import { HOUR_MS, ManualClock } from './clock';
import { SqliteUsageRepository } from './sqlite-usage.repository';
import { UsageLedgerService } from './usage-ledger.service';
import { UsageBucket } from './usage.types';

const T0 = Date.parse('2026-05-01T10:15:00.000Z');

/** A real SQLite store whose writes can be made to fail, and (optionally) to fail after committing. */
class FlakyRepository extends SqliteUsageRepository {
  down = false;
  /** The write commits, then the caller is told it failed (an answer lost on the way back). */
  loseAnswer = false;
  writes: string[] = [];

  override async write(batchId: string, buckets: readonly UsageBucket[]): Promise<void> {
    this.writes.push(batchId);
    if (this.down) throw new Error('connection refused');
    await super.write(batchId, buckets);
    if (this.loseAnswer) {
      this.loseAnswer = false;
      throw new Error('connection reset after commit');
    }
  }
}

function setup(env: Partial<Record<string, string>> = {}) {
  const repo = new FlakyRepository(join(mkdtempSync(join(tmpdir(), 'ledger-')), 'keys.db'));
  const clock = new ManualClock(T0);
  const registry = new Registry();
  const metrics = {
    flushDuration: new Histogram({ name: 'flush_seconds', help: 'h', registers: [registry] }),
    flushFailures: new Counter({ name: 'flush_failures', help: 'h', registers: [registry] }),
    dropped: new Counter({ name: 'dropped', help: 'h', registers: [registry] }),
    buffered: new Gauge({ name: 'buffered', help: 'h', registers: [registry] }),
  };
  const ledger = new UsageLedgerService(repo, AppConfig.fromEnv({ USAGE_FLUSH_INTERVAL_MS: '3600000', ...env }), clock, metrics);
  return { repo, clock, ledger, metrics };
}

const totals = async (repo: SqliteUsageRepository) => (await repo.query({ groupBy: [] }))[0];

beforeAll(() => Logger.overrideLogger(false));

describe('UsageLedgerService', () => {
  it('aggregates records per key, model, route and hour in memory, and writes them in one batch', async () => {
    const { repo, ledger, clock } = setup();
    await ledger.onModuleInit();
    for (let i = 0; i < 5; i++) ledger.record({ keyId: 'k1', model: 'm', route: '/v1/generate', promptTokens: 3, completionTokens: 4 });
    ledger.record({ keyId: 'k1', model: 'm', route: '/v1/generate', cacheHits: 1 });
    ledger.record({ keyId: 'k2', model: 'm', route: '/v1/generate', errors: 1 });
    clock.advance(HOUR_MS);
    ledger.record({ keyId: 'k1', model: 'm', route: '/v1/generate', promptTokens: 1, cachedPromptTokens: 1, completionTokens: -5 });
    expect(ledger.stats()).toMatchObject({ buffered: 3, lagSeconds: 3600 });
    expect(await repo.query({ groupBy: [] })).toEqual([expect.objectContaining({ requests: 0 })]);
    await ledger.flush();
    expect(repo.writes).toHaveLength(1);
    expect(ledger.stats()).toMatchObject({ buffered: 0, lagSeconds: 0, flushes: 1 });
    expect(await repo.query({ groupBy: ['key', 'hour'] })).toEqual([
      { keyId: 'k1', hour: T0 - 15 * 60_000, requests: 6, promptTokens: 15, cachedPromptTokens: 0, completionTokens: 20, cacheHits: 1, errors: 0 },
      { keyId: 'k2', hour: T0 - 15 * 60_000, requests: 1, promptTokens: 0, cachedPromptTokens: 0, completionTokens: 0, cacheHits: 0, errors: 1 },
      // A negative count is not a count: 0.
      { keyId: 'k1', hour: T0 + 45 * 60_000, requests: 1, promptTokens: 1, cachedPromptTokens: 1, completionTokens: 0, cacheHits: 0, errors: 0 },
    ]);
    await ledger.onApplicationShutdown();
  });

  it('keeps failed batches while the database is down and writes them, in order, once it is back', async () => {
    const { repo, ledger, metrics } = setup();
    await ledger.onModuleInit();
    repo.down = true;
    ledger.record({ keyId: 'k', model: 'm', route: '/r', promptTokens: 10 });
    await ledger.flush();
    ledger.record({ keyId: 'k', model: 'm', route: '/r', promptTokens: 10 });
    ledger.record({ keyId: 'k', model: 'm', route: '/other', promptTokens: 1 });
    await ledger.flush();
    expect(ledger.stats()).toMatchObject({ buffered: 3, pendingBatches: 2, failures: 2 });
    expect((await metrics.flushFailures.get()).values[0].value).toBe(2);
    repo.down = false;
    await ledger.flush();
    expect(ledger.stats()).toMatchObject({ buffered: 0, pendingBatches: 0 });
    expect(await totals(repo)).toMatchObject({ requests: 3, promptTokens: 21 });
    await ledger.onApplicationShutdown();
  });

  it('writes a batch exactly once when the answer to a committed write is lost', async () => {
    const { repo, ledger } = setup();
    await ledger.onModuleInit();
    ledger.record({ keyId: 'k', model: 'm', route: '/r', promptTokens: 7 });
    repo.loseAnswer = true;
    await ledger.flush();
    expect(ledger.stats().pendingBatches).toBe(1);
    await ledger.flush(); // retries the same batch id: skipped by the store
    expect(repo.writes[0]).toBe(repo.writes[1]);
    expect(await totals(repo)).toMatchObject({ requests: 1, promptTokens: 7 });
  });

  it('bounds the buffer: beyond USAGE_BUFFER_MAX buckets, usage of new buckets is dropped and counted; known buckets still add up', async () => {
    const { repo, ledger, metrics } = setup({ USAGE_BUFFER_MAX: '2' });
    await ledger.onModuleInit();
    repo.down = true;
    ledger.record({ keyId: 'a', model: 'm', route: '/r' });
    await ledger.flush();
    ledger.record({ keyId: 'b', model: 'm', route: '/r' });
    ledger.record({ keyId: 'c', model: 'm', route: '/r' }); // a third bucket: dropped
    ledger.record({ keyId: 'b', model: 'm', route: '/r', promptTokens: 5 }); // known bucket: kept
    expect(ledger.stats()).toMatchObject({ buffered: 2, dropped: 1 });
    expect((await metrics.dropped.get()).values[0].value).toBe(1);
    repo.down = false;
    await ledger.onApplicationShutdown(); // the shutdown flush writes everything held
    const reopened = new SqliteUsageRepository((repo as unknown as { file: string }).file);
    expect(await reopened.query({ groupBy: ['key'] })).toEqual([
      expect.objectContaining({ keyId: 'b', requests: 2, promptTokens: 5 }),
      expect.objectContaining({ keyId: 'a', requests: 1 }),
    ]);
    await reopened.close();
  });

  it('serialises concurrent flushes (each batch written once)', async () => {
    const { repo, ledger } = setup();
    await ledger.onModuleInit();
    const flushes: Promise<void>[] = [];
    for (let i = 0; i < 50; i++) {
      ledger.record({ keyId: `k${i % 3}`, model: 'm', route: '/r', completionTokens: 2 });
      if (i % 5 === 0) flushes.push(ledger.flush());
    }
    flushes.push(ledger.flush());
    await Promise.all(flushes);
    expect(new Set(repo.writes).size).toBe(repo.writes.length);
    expect(await totals(repo)).toMatchObject({ requests: 50, completionTokens: 100 });
    await ledger.onApplicationShutdown();
  });

  it('never blocks or throws on record, even with a store that was never reachable', async () => {
    const { repo, ledger } = setup();
    repo.down = true;
    jest.spyOn(repo, 'migrate').mockRejectedValue(new Error('no database'));
    await ledger.onModuleInit();
    expect(() => ledger.record({ keyId: randomUUID(), model: 'm', route: '/r' })).not.toThrow();
    await expect(ledger.flush()).resolves.toBeUndefined();
    expect(ledger.stats()).toMatchObject({ buffered: 1, failures: 1 });
    await ledger.onApplicationShutdown();
  });
});
