import { MigratedStore } from '@app/common';
import { BudgetPeriod, ReserveOutcome, UsageBucket, UsageQuery, UsageRow } from './usage.types';

/**
 * Where the usage ledger and the database budget counters live: the key store's database
 * (SQLite file by default, PostgreSQL with DATABASE_URL), in tables of their own. Both
 * implementations pass the same contract suite. Methods reject when the database cannot be
 * reached; callers decide what an outage means.
 */
export abstract class UsageRepository extends MigratedStore {
  /**
   * Adds the buckets' counts to the ledger, in one transaction, exactly once per `batchId`: a
   * batch written before (a retry after an answer that got lost) is skipped.
   */
  abstract write(batchId: string, buckets: readonly UsageBucket[]): Promise<void>;
  /** Sums over the filters, one row per group, ordered by time then by total tokens. */
  abstract query(query: UsageQuery): Promise<UsageRow[]>;
  /** Prompt + completion tokens the ledger holds for a key in [from, to). */
  abstract ledgerTokens(keyId: string, from: number, to: number): Promise<number>;
  /**
   * Budget counters (used when there is no Redis). Atomically: counters missing are first
   * seeded from the ledger; if any period is spent (used >= limit) nothing changes and `ok` is
   * false, else `tokens` is added to every period.
   */
  abstract reserveBudget(keyId: string, periods: readonly BudgetPeriod[], tokens: number, now: number): Promise<ReserveOutcome>;
  /** Adds `delta` (negative to give back) to existing counters, never below 0. */
  abstract adjustBudget(keyId: string, periodIds: readonly string[], delta: number, now: number): Promise<void>;
  /** Current counters (seeded from the ledger when missing). */
  abstract readBudget(keyId: string, periods: readonly BudgetPeriod[], now: number): Promise<number[]>;
  /** Deletes budget counters and batch ids not touched since `before` (housekeeping). */
  abstract prune(before: number): Promise<void>;
  abstract close(): Promise<void>;
}
