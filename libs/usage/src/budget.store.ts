import Redis from 'ioredis';
import { UsageRepository } from './usage.repository';
import { BudgetPeriod, ReserveOutcome } from './usage.types';

/**
 * Budget counters shared by every replica: per key and period, the tokens used plus those
 * reserved by requests still running. A counter that does not exist yet (first request of the
 * period, Redis restarted empty) starts from the ledger's sum for the period.
 */
export interface BudgetStore {
  readonly kind: 'redis' | 'database';
  /** Atomically: refuses (`ok` false, nothing added) if any period is spent, else adds `tokens` to each. */
  reserve(keyId: string, periods: readonly BudgetPeriod[], tokens: number, now: number): Promise<ReserveOutcome>;
  /** Adds `delta` (negative gives tokens back) to the periods' counters, never below 0. */
  adjust(keyId: string, periods: readonly BudgetPeriod[], delta: number, now: number): Promise<void>;
  read(keyId: string, periods: readonly BudgetPeriod[], now: number): Promise<number[]>;
  close(): Promise<void>;
}

/** The database's counters (no Redis): a transaction per reservation. */
export class DatabaseBudgetStore implements BudgetStore {
  readonly kind = 'database';

  constructor(private readonly repo: UsageRepository) {}

  async reserve(keyId: string, periods: readonly BudgetPeriod[], tokens: number, now: number): Promise<ReserveOutcome> {
    await this.repo.ready();
    return this.repo.reserveBudget(keyId, periods, tokens, now);
  }

  async adjust(keyId: string, periods: readonly BudgetPeriod[], delta: number, now: number): Promise<void> {
    await this.repo.ready();
    await this.repo.adjustBudget(keyId, periods.map((p) => p.id), delta, now);
  }

  async read(keyId: string, periods: readonly BudgetPeriod[], now: number): Promise<number[]> {
    await this.repo.ready();
    return this.repo.readBudget(keyId, periods, now);
  }

  async close(): Promise<void> {
    // The repository belongs to the ledger, which closes it after its last flush.
  }
}

// KEYS: one counter per period. ARGV[1]: tokens; ARGV[1+i]: limit of period i.
// Returns {-1, i} when counter i is missing (to be seeded), {0, used...} when a period is spent,
// {1, used...} after adding the tokens; `used` is before the reservation.
const RESERVE = `
local used = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if not v then return {-1, i} end
  used[i] = tonumber(v)
end
for i = 1, #KEYS do
  if used[i] >= tonumber(ARGV[1 + i]) then return {0, unpack(used)} end
end
for i, key in ipairs(KEYS) do redis.call('INCRBY', key, ARGV[1]) end
return {1, unpack(used)}`;
// ARGV[1]: delta. Only existing counters change (an expired period stays gone); never below 0.
const ADJUST = `
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    local v = redis.call('INCRBY', key, ARGV[1])
    if v < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  end
end
return 1`;

interface BudgetCommands {
  llmBudgetReserve(...args: (string | number)[]): Promise<number[]>;
  llmBudgetAdjust(...args: (string | number)[]): Promise<number>;
}

/** Counters kept this long after their period ends (late settlements of long requests). */
const GRACE_MS = 86_400_000;

/**
 * Counters in Redis (REDIS_URL): one Lua script per reservation, so replicas never both take the
 * last tokens. Keys `budget:<key id>:<period>` (under REDIS_KEY_PREFIX) expire a day after their
 * period ends.
 */
export class RedisBudgetStore implements BudgetStore {
  readonly kind = 'redis';
  readonly #redis: Redis & BudgetCommands;

  constructor(
    redis: Redis,
    private readonly repo: UsageRepository,
  ) {
    this.#redis = redis as Redis & BudgetCommands;
    this.#redis.defineCommand('llmBudgetReserve', { lua: RESERVE });
    this.#redis.defineCommand('llmBudgetAdjust', { lua: ADJUST });
  }

  async reserve(keyId: string, periods: readonly BudgetPeriod[], tokens: number, now: number): Promise<ReserveOutcome> {
    const keys = periods.map((p) => this.#key(keyId, p));
    for (let attempt = 0; attempt < 3; attempt++) {
      this.#ready();
      const r = await this.#redis.llmBudgetReserve(keys.length, ...keys, tokens, ...periods.map((p) => p.limit));
      if (r[0] === -1) {
        await this.#seed(keyId, periods[r[1] - 1], now);
        continue;
      }
      return { ok: r[0] === 1, used: r.slice(1).map(Number) };
    }
    throw new Error('budget counter vanished while being seeded');
  }

  async adjust(keyId: string, periods: readonly BudgetPeriod[], delta: number): Promise<void> {
    this.#ready();
    const keys = periods.map((p) => this.#key(keyId, p));
    await this.#redis.llmBudgetAdjust(keys.length, ...keys, delta);
  }

  async read(keyId: string, periods: readonly BudgetPeriod[], now: number): Promise<number[]> {
    this.#ready();
    const values = await this.#redis.mget(...periods.map((p) => this.#key(keyId, p)));
    return Promise.all(values.map(async (v, i) => (v === null ? this.#seed(keyId, periods[i], now) : Number(v))));
  }

  async close(): Promise<void> {
    if (this.#redis.status === 'ready') await this.#redis.quit().catch(() => this.#redis.disconnect());
    else this.#redis.disconnect();
  }

  /** Creates a missing counter from the ledger (the first replica to get there wins). */
  async #seed(keyId: string, period: BudgetPeriod, now: number): Promise<number> {
    await this.repo.ready();
    const fromLedger = await this.repo.ledgerTokens(keyId, period.start, period.end);
    const ttl = Math.max(1000, period.end - now + GRACE_MS);
    const set = await this.#redis.set(this.#key(keyId, period), fromLedger, 'PX', ttl, 'NX');
    if (set === 'OK') return fromLedger;
    return Number((await this.#redis.get(this.#key(keyId, period))) ?? fromLedger);
  }

  #ready(): void {
    // Without an offline queue, a command sent while disconnected fails at once; say why.
    if (this.#redis.status !== 'ready') throw new Error(`redis connection ${this.#redis.status}`);
  }

  #key(keyId: string, period: BudgetPeriod): string {
    return `budget:${keyId}:${period.id}`;
  }
}
