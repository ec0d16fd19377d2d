import { Inject, Injectable, Logger, OnApplicationShutdown, OnModuleInit, Optional } from '@nestjs/common';
import type { UsageConfig } from './usage.config';
import Redis from 'ioredis';
import type { Counter } from 'prom-client';
import type { Principal } from '@app/auth';
import { AppConfig } from '@app/common';
import { DatabaseBudgetStore, RedisBudgetStore } from './budget.store';
import type { BudgetStore } from './budget.store';
import { Clock, DAY_MS, dayOf } from './clock';
import { UsageErrorCode, UsageException } from './usage.exception';
import { UsageRepository } from './usage.repository';
import { BudgetPeriod } from './usage.types';

/** One budget of a key as the API reports it. */
export interface BudgetStatus {
  readonly period: 'day' | 'month';
  readonly limit: number;
  /** Tokens used in the period, those reserved by running requests included. */
  readonly used: number;
  readonly remaining: number;
  /** When the period ends (ms since the epoch, UTC midnight). */
  readonly resetsAt: number;
}

/**
 * Tokens held for a running request. `settle(actual)` replaces the reservation by what the
 * request really used (0 gives it all back); call it once, when the request ends. Never rejects.
 */
export interface BudgetReservation {
  readonly tokens: number;
  settle(actualTokens: number): Promise<void>;
}

/** Metrics of the budgets: `llm_budget_exceeded_total{period}`. */
export interface BudgetMetrics {
  readonly exceeded?: Counter<'period'>;
}

export const BUDGET_METRICS = Symbol('BUDGET_METRICS');
/** Optional: a store to use instead of Redis / the database (tests). */
export const BUDGET_STORE = Symbol('BUDGET_STORE');

const NOTHING: BudgetReservation = { tokens: 0, settle: async () => undefined };
/** A Redis call slower than this counts as failed (same bound as the rate limits'). */
const REDIS_TIMEOUT_MS = 500;
const LOG_EVERY_MS = 30_000;

/** The UTC day and month holding `now`, with the key's limits (only those set). */
export function budgetPeriods(budget: { day: number; month: number } | undefined, now: number): BudgetPeriod[] {
  const periods: BudgetPeriod[] = [];
  if (!budget) return periods;
  const d = new Date(now);
  if (budget.day > 0) {
    const start = dayOf(now);
    periods.push({ kind: 'day', id: `day:${d.toISOString().slice(0, 10)}`, start, end: start + DAY_MS, limit: budget.day });
  }
  if (budget.month > 0) {
    const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
    const end = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
    periods.push({ kind: 'month', id: `month:${d.toISOString().slice(0, 7)}`, start, end, limit: budget.month });
  }
  return periods;
}

function hasBudget(principal: Principal): boolean {
  return principal.budget !== undefined && (principal.budget.day > 0 || principal.budget.month > 0);
}

/**
 * Token budgets per key and UTC day / month, shared by every replica (Redis with REDIS_URL, else
 * the key store's database). Two points in a request:
 *
 * - `admit()` at admission (cheap read): a key whose budget is spent gets 429 `budget_exceeded`
 *   with the reset time, even for answers a cache would give; near the limit the response gets
 *   `X-Budget-Remaining-Tokens`.
 * - `reserve(prompt + max_tokens)` just before the model runs, atomically: refused when a period
 *   is spent, otherwise the tokens are held; `settle(actual)` at the end corrects the counter.
 *   So parallel requests can overshoot a budget by at most one request's reservation: the last
 *   one admitted while something was left.
 *
 * Cache hits cost no model tokens and are not charged. When the counters cannot be reached,
 * BUDGET_FAIL_MODE decides: `open` serves without enforcing, `closed` answers 503.
 */
@Injectable()
export class BudgetService implements OnModuleInit, OnApplicationShutdown {
  readonly #logger = new Logger('Budget');
  readonly #store: BudgetStore;
  readonly #redis: Redis | null = null;
  #lastError = 0;
  #down = false;

  constructor(
    @Inject(AppConfig) private readonly config: UsageConfig,
    repo: UsageRepository,
    private readonly clock: Clock,
    @Optional() @Inject(BUDGET_METRICS) private readonly metrics: BudgetMetrics = {},
    @Optional() @Inject(BUDGET_STORE) store?: BudgetStore,
  ) {
    if (store) this.#store = store;
    else if (config.redisUrl) {
      this.#redis = new Redis(config.redisUrl, {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        commandTimeout: REDIS_TIMEOUT_MS,
        connectTimeout: 2000,
        retryStrategy: (times) => Math.min(100 * times, 1000),
        lazyConnect: true,
        keyPrefix: config.redisKeyPrefix,
      });
      this.#redis.on('error', () => undefined);
      this.#store = new RedisBudgetStore(this.#redis, repo);
    } else this.#store = new DatabaseBudgetStore(repo);
  }

  /** `redis` or `database`. */
  get backend(): 'redis' | 'database' {
    return this.#store.kind;
  }

  async onModuleInit(): Promise<void> {
    if (!this.#redis) return;
    try {
      await this.#redis.connect();
    } catch (err) {
      this.#failed(err); // ioredis keeps reconnecting; the fail mode covers the meantime
    }
  }

  async onApplicationShutdown(): Promise<void> {
    await this.#store.close();
  }

  /** The key's budgets now (none without a budget). Rejects when the counters cannot be read. */
  async status(principal: Principal): Promise<BudgetStatus[]> {
    const now = this.clock.now();
    const periods = budgetPeriods(principal.budget, now);
    if (periods.length === 0) return [];
    const used = await this.#store.read(principal.id, periods, now);
    return periods.map((p, i) => ({ period: p.kind, limit: p.limit, used: used[i], remaining: Math.max(0, p.limit - used[i]), resetsAt: p.end }));
  }

  /**
   * At admission: refuses with 429 `budget_exceeded` when a budget is spent; returns the
   * headers to send (the warning near the limit, else none).
   */
  async admit(principal: Principal): Promise<Record<string, string>> {
    // The common case (no budget) costs one comparison: this runs on every metered request, cache hits included.
    if (!hasBudget(principal)) return {};
    let statuses: BudgetStatus[];
    try {
      statuses = await this.status(principal);
      this.#succeeded();
    } catch (err) {
      this.#unavailable(err);
      return {};
    }
    const spent = statuses.filter((s) => s.used >= s.limit);
    if (spent.length > 0) throw this.#exceeded(spent);
    return this.warningHeaders(statuses);
  }

  /**
   * Holds `tokens` (prompt + max_tokens) of the caller's budgets for a request about to run;
   * 429 `budget_exceeded` when a period is spent. A caller without a budget holds nothing.
   */
  async reserve(principal: Principal | undefined, tokens: number): Promise<BudgetReservation> {
    const now = this.clock.now();
    if (!principal || !hasBudget(principal)) return NOTHING;
    const periods = budgetPeriods(principal.budget, now);
    const held = Math.max(1, Math.round(tokens));
    let outcome;
    try {
      outcome = await this.#store.reserve(principal.id, periods, held, now);
      this.#succeeded();
    } catch (err) {
      this.#unavailable(err);
      return NOTHING;
    }
    if (!outcome.ok) {
      const used = outcome.used;
      throw this.#exceeded(
        periods
          .map((p, i) => ({ period: p.kind, limit: p.limit, used: used[i], remaining: Math.max(0, p.limit - used[i]), resetsAt: p.end }))
          .filter((s) => s.used >= s.limit),
      );
    }
    let settled = false;
    return {
      tokens: held,
      settle: async (actual: number) => {
        if (settled) return;
        settled = true;
        const delta = Math.max(0, Math.round(actual)) - held;
        if (delta === 0) return;
        try {
          await this.#store.adjust(principal.id, periods, delta, this.clock.now());
        } catch (err) {
          this.#failed(err); // the counter keeps the reservation: errs on the safe side
        }
      },
    };
  }

  /** `X-Budget-Remaining-Tokens` (the smallest remainder) and `X-Budget-Reset` once a budget is nearly spent. */
  warningHeaders(statuses: readonly BudgetStatus[]): Record<string, string> {
    const near = statuses.filter((s) => s.remaining <= this.config.budgetWarnFraction * s.limit);
    if (near.length === 0) return {};
    const tightest = near.reduce((a, b) => (b.remaining < a.remaining ? b : a));
    return {
      'X-Budget-Remaining-Tokens': String(tightest.remaining),
      'X-Budget-Reset': new Date(tightest.resetsAt).toISOString(),
    };
  }

  #exceeded(spent: readonly BudgetStatus[]): UsageException {
    // The period that frees the key last decides when to come back.
    const s = spent.reduce((a, b) => (b.resetsAt > a.resetsAt ? b : a));
    this.metrics.exceeded?.inc({ period: s.period });
    const reset = new Date(s.resetsAt).toISOString();
    const retryAfter = Math.max(1, Math.ceil((s.resetsAt - this.clock.now()) / 1000));
    return new UsageException(
      UsageErrorCode.BudgetExceeded,
      `Token budget of this API key is spent: ${s.used} of ${s.limit} tokens used this ${s.period} (UTC); it resets at ${reset}`,
      {
        headers: {
          'Retry-After': String(retryAfter),
          'X-Budget-Limit-Tokens': String(s.limit),
          'X-Budget-Remaining-Tokens': '0',
          'X-Budget-Reset': reset,
        },
      },
    );
  }

  #unavailable(err: unknown): void {
    this.#failed(err);
    if (this.config.budgetFailMode === 'closed') {
      throw new UsageException(UsageErrorCode.BudgetUnavailable, 'Budgets cannot be checked right now; retry shortly', {
        headers: { 'Retry-After': '1' },
        cause: err,
      });
    }
  }

  #failed(err: unknown): void {
    const now = Date.now();
    if (!this.#down || now - this.#lastError >= LOG_EVERY_MS) {
      this.#lastError = now;
      const consequence = this.config.budgetFailMode === 'open' ? 'serving without enforcing budgets (BUDGET_FAIL_MODE=open)' : 'keys with a budget get 503 (BUDGET_FAIL_MODE=closed)';
      this.#logger.error(`Budget counters (${this.#store.kind}) unavailable (${(err as Error).message}): ${consequence}`);
    }
    this.#down = true;
  }

  #succeeded(): void {
    if (!this.#down) return;
    this.#down = false;
    this.#logger.log(`Budget counters (${this.#store.kind}) are back`);
  }
}
