import { Logger } from '@nestjs/common';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
import { Counter, Registry } from 'prom-client';
import type { Principal } from '@app/auth';
import { AppConfig } from '@app/common';
import { BudgetService } from './budget.service';
import { BudgetStore } from './budget.store';
import { HOUR_MS, ManualClock } from './clock';
import { SqliteUsageRepository } from './sqlite-usage.repository';
import { UsageException } from './usage.exception';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

function principal(budget: { day: number; month: number }, id = `key_${randomBytes(8).toString('hex')}`): Principal {
  return { id, name: id, scopes: ['generate'], limits: { rpm: 0, tpm: 0, concurrency: 0 }, budget, priority: 'normal', source: 'store' };
}

interface Setup {
  readonly budgets: BudgetService;
  readonly clock: ManualClock;
  readonly repo: SqliteUsageRepository;
  readonly exceeded: Counter<'period'>;
  close(): Promise<void>;
}

async function setup(backend: 'database' | 'redis', env: Record<string, string> = {}, store?: BudgetStore): Promise<Setup> {
  const repo = new SqliteUsageRepository(join(mkdtempSync(join(tmpdir(), 'budget-')), 'keys.db'));
  const clock = new ManualClock(Date.parse('2026-01-31T23:58:00.000Z'));
  const exceeded = new Counter({ name: 'exceeded', help: 'h', labelNames: ['period'], registers: [new Registry()] });
  const config = AppConfig.fromEnv({
    ...(backend === 'redis' ? { REDIS_URL, REDIS_KEY_PREFIX: `test-budget-${randomBytes(4).toString('hex')}:` } : {}),
    ...env,
  });
  const budgets = new BudgetService(config, repo, clock, { exceeded }, store);
  await budgets.onModuleInit();
  return {
    budgets,
    clock,
    repo,
    exceeded,
    async close() {
      if (backend === 'redis') {
        const redis = new Redis(REDIS_URL);
        const keys = await redis.keys(`${config.redisKeyPrefix}*`);
        if (keys.length) await redis.del(...keys);
        await redis.quit();
      }
      await budgets.onApplicationShutdown();
      await repo.close();
    },
  };
}

beforeAll(() => Logger.overrideLogger(false));

describe.each(['database', 'redis'] as const)('budgets (%s counters)', (backend) => {
  let t: Setup;
  beforeEach(async () => {
    t = await setup(backend);
  });
  afterEach(() => t.close());

  it('reserves, settles to the real use, and refuses with 429 budget_exceeded once a period is spent', async () => {
    const p = principal({ day: 1000, month: 0 });
    expect(t.budgets.backend).toBe(backend);
    const r = await t.budgets.reserve(p, 600);
    expect(await t.budgets.status(p)).toEqual([{ period: 'day', limit: 1000, used: 600, remaining: 400, resetsAt: Date.parse('2026-02-01T00:00:00Z') }]);
    await r.settle(150);
    await r.settle(999); // once only
    expect((await t.budgets.status(p))[0].used).toBe(150);
    await (await t.budgets.reserve(p, 800)).settle(800);
    // 950 of 1,000: near the limit, the response is warned.
    expect(await t.budgets.admit(p)).toEqual({ 'X-Budget-Remaining-Tokens': '50', 'X-Budget-Reset': '2026-02-01T00:00:00.000Z' });
    // 50 left: a request is still admitted, and may end beyond the limit (1,050 of 1,000). Then it is spent.
    await (await t.budgets.reserve(p, 100)).settle(100);
    const refused = await t.budgets.admit(p).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(UsageException);
    expect(refused).toMatchObject({
      status: 429,
      code: 'budget_exceeded',
      message: 'Token budget of this API key is spent: 1050 of 1000 tokens used this day (UTC); it resets at 2026-02-01T00:00:00.000Z',
      headers: { 'Retry-After': '120', 'X-Budget-Limit-Tokens': '1000', 'X-Budget-Remaining-Tokens': '0', 'X-Budget-Reset': '2026-02-01T00:00:00.000Z' },
    });
    await expect(t.budgets.reserve(p, 1)).rejects.toMatchObject({ code: 'budget_exceeded' });
    expect((await t.exceeded.get()).values).toEqual([{ labels: { period: 'day' }, value: 2 }]);
  });

  it('resets at the UTC day boundary; the month goes on (injectable clock)', async () => {
    const p = principal({ day: 100, month: 250 });
    await (await t.budgets.reserve(p, 100)).settle(120);
    await expect(t.budgets.admit(p)).rejects.toMatchObject({ code: 'budget_exceeded' });
    t.clock.set(Date.parse('2026-02-01T00:00:00.000Z')); // a new day, and a new month
    expect(await t.budgets.admit(p)).toEqual({});
    await (await t.budgets.reserve(p, 90)).settle(90);
    t.clock.set(Date.parse('2026-02-02T00:00:00.000Z'));
    await (await t.budgets.reserve(p, 90)).settle(90);
    t.clock.set(Date.parse('2026-02-03T00:00:00.000Z'));
    await (await t.budgets.reserve(p, 90)).settle(90); // 270 of 250 this month
    t.clock.set(Date.parse('2026-02-04T00:00:00.000Z'));
    const refused = await t.budgets.reserve(p, 1).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'budget_exceeded', headers: { 'X-Budget-Reset': '2026-03-01T00:00:00.000Z' } });
    expect((refused as Error).message).toContain('270 of 250 tokens used this month');
    t.clock.set(Date.parse('2026-03-01T00:00:00.000Z'));
    expect((await t.budgets.reserve(p, 1)).tokens).toBe(1);
  });

  it('parallel requests overshoot by at most one reservation', async () => {
    const p = principal({ day: 5000, month: 0 });
    const held = 700;
    const results = await Promise.allSettled(Array.from({ length: 25 }, () => t.budgets.reserve(p, held)));
    const admitted = results.filter((r) => r.status === 'fulfilled');
    expect(results.filter((r) => r.status === 'rejected').every((r) => (r as PromiseRejectedResult).reason.code === 'budget_exceeded')).toBe(true);
    // Each admitted request really uses its whole reservation: the worst case.
    await Promise.all(admitted.map((r) => (r as PromiseFulfilledResult<{ settle(n: number): Promise<void> }>).value.settle(held)));
    const used = (await t.budgets.status(p))[0].used;
    expect(admitted.length).toBe(Math.ceil(5000 / held)); // 8: admitted while something was left
    expect(used).toBeGreaterThan(5000);
    expect(used).toBeLessThanOrEqual(5000 + held);
  });

  it('starts a period from the ledger (a budget set mid-month counts the month so far)', async () => {
    const p = principal({ day: 0, month: 1000 });
    await t.repo.ready();
    await t.repo.write(randomUUID(), [
      { keyId: p.id, model: 'm', route: '/r', hour: Date.parse('2026-01-05T10:00:00Z'), requests: 1, promptTokens: 500, cachedPromptTokens: 0, completionTokens: 450, cacheHits: 0, errors: 0 },
      { keyId: p.id, model: 'm', route: '/r', hour: Date.parse('2025-12-31T10:00:00Z'), requests: 1, promptTokens: 9999, cachedPromptTokens: 0, completionTokens: 0, cacheHits: 0, errors: 0 },
    ]);
    expect((await t.budgets.status(p))[0]).toMatchObject({ used: 950, remaining: 50 });
    expect(await t.budgets.admit(p)).toEqual({ 'X-Budget-Remaining-Tokens': '50', 'X-Budget-Reset': '2026-02-01T00:00:00.000Z' });
  });

  it('charges nothing to keys without a budget', async () => {
    const p = principal({ day: 0, month: 0 });
    expect(await t.budgets.admit(p)).toEqual({});
    expect((await t.budgets.reserve(p, 10_000)).tokens).toBe(0);
    expect(await t.budgets.status(p)).toEqual([]);
    expect((await t.budgets.reserve(undefined, 5)).tokens).toBe(0);
  });
});

describe('budgets when the counters are unreachable', () => {
  const broken: BudgetStore = {
    kind: 'database',
    reserve: () => Promise.reject(new Error('down')),
    adjust: () => Promise.reject(new Error('down')),
    read: () => Promise.reject(new Error('down')),
    close: async () => undefined,
  };

  it('open (default): serves without enforcing', async () => {
    const t = await setup('database', {}, broken);
    expect(await t.budgets.admit(principal({ day: 1, month: 0 }))).toEqual({});
    const r = await t.budgets.reserve(principal({ day: 1, month: 0 }), 10);
    await expect(r.settle(5)).resolves.toBeUndefined();
    await t.close();
  });

  it('closed: 503 budget_unavailable for keys with a budget, nothing for the others', async () => {
    const t = await setup('database', { BUDGET_FAIL_MODE: 'closed' }, broken);
    await expect(t.budgets.admit(principal({ day: 1, month: 0 }))).rejects.toMatchObject({ status: 503, code: 'budget_unavailable' });
    await expect(t.budgets.reserve(principal({ day: 0, month: 5 }), 1)).rejects.toMatchObject({ status: 503 });
    expect(await t.budgets.admit(principal({ day: 0, month: 0 }))).toEqual({});
    await t.close();
  });
});

describe('warning headers', () => {
  it('appear once a budget has less than BUDGET_WARN_FRACTION left (1 = always)', async () => {
    const t = await setup('database', { BUDGET_WARN_FRACTION: '0.25' });
    const p = principal({ day: 1000, month: 100_000 });
    await (await t.budgets.reserve(p, 700)).settle(700);
    expect(await t.budgets.admit(p)).toEqual({});
    t.clock.advance(HOUR_MS / 60);
    await (await t.budgets.reserve(p, 100)).settle(100);
    expect(await t.budgets.admit(p)).toEqual({ 'X-Budget-Remaining-Tokens': '200', 'X-Budget-Reset': '2026-02-01T00:00:00.000Z' });
    await t.close();
  });
});
