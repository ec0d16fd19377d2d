/** Fields a usage report can be grouped by (`group_by=key,day`). */
export const GROUP_FIELDS = ['key', 'model', 'route', 'day', 'hour'] as const;
export type GroupField = (typeof GROUP_FIELDS)[number];

/** What the ledger counts, per bucket. */
export interface UsageCounts {
  readonly requests: number;
  readonly promptTokens: number;
  /** Prompt tokens served from a slot's KV cache (prefix reuse); part of promptTokens. */
  readonly cachedPromptTokens: number;
  readonly completionTokens: number;
  /** Requests answered from a response cache (no model tokens). */
  readonly cacheHits: number;
  /** Requests that ended with a status >= 400 (499 = the client went away first). */
  readonly errors: number;
}

export const ZERO_COUNTS: UsageCounts = { requests: 0, promptTokens: 0, cachedPromptTokens: 0, completionTokens: 0, cacheHits: 0, errors: 0 };

/** One request's usage, as `UsageLedgerService.record` takes it. Counts default to 0, `requests` to 1. */
export interface UsageRecord extends Partial<UsageCounts> {
  /** Key id (`key_…`, `static:…`, `anonymous`). */
  readonly keyId: string;
  /** The model id the request ran on. */
  readonly model: string;
  /** Route template (`/v1/chat/completions`). */
  readonly route: string;
  /** When it happened (ms since the epoch); default: the clock's now. */
  readonly at?: number;
}

/** The ledger's unit: one key, model, route and UTC hour. */
export interface UsageBucket extends UsageCounts {
  readonly keyId: string;
  readonly model: string;
  readonly route: string;
  /** Start of the UTC hour, ms since the epoch. */
  readonly hour: number;
}

/** Filters and grouping of a usage report; `from` inclusive, `to` exclusive, both ms (hour precision). */
export interface UsageQuery {
  readonly keyId?: string;
  readonly model?: string;
  readonly route?: string;
  readonly from?: number;
  readonly to?: number;
  readonly groupBy: readonly GroupField[];
}

/** One line of a report: the group's fields (those in `groupBy`) and its summed counts. */
export interface UsageRow extends UsageCounts {
  readonly keyId?: string;
  readonly model?: string;
  readonly route?: string;
  /** Start of the UTC day (group_by day), ms. */
  readonly day?: number;
  /** Start of the UTC hour (group_by hour), ms. */
  readonly hour?: number;
}

export function addCounts(a: UsageCounts, b: Partial<UsageCounts>): UsageCounts {
  return {
    requests: a.requests + (b.requests ?? 0),
    promptTokens: a.promptTokens + (b.promptTokens ?? 0),
    cachedPromptTokens: a.cachedPromptTokens + (b.cachedPromptTokens ?? 0),
    completionTokens: a.completionTokens + (b.completionTokens ?? 0),
    cacheHits: a.cacheHits + (b.cacheHits ?? 0),
    errors: a.errors + (b.errors ?? 0),
  };
}

/** A budget period of one key: its counter id, bounds and limit. */
export interface BudgetPeriod {
  readonly kind: 'day' | 'month';
  /** `day:2026-01-31` or `month:2026-01` (UTC). */
  readonly id: string;
  /** Start (inclusive) and end (exclusive), ms. */
  readonly start: number;
  readonly end: number;
  /** Tokens allowed in the period (> 0). */
  readonly limit: number;
}

/** What a reservation attempt found: `used` per period, before the reservation. */
export interface ReserveOutcome {
  readonly ok: boolean;
  readonly used: readonly number[];
}
