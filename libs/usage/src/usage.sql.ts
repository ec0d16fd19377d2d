import { GroupField, UsageCounts, UsageQuery, UsageRow } from './usage.types';

/** SUM expressions of the counted columns, in UsageCounts order; shared by both databases. */
export const SUMS = `SUM(requests) AS requests, SUM(prompt_tokens) AS prompt_tokens,
  SUM(cached_prompt_tokens) AS cached_prompt_tokens, SUM(completion_tokens) AS completion_tokens,
  SUM(cache_hits) AS cache_hits, SUM(errors) AS errors`;

/** The `[column, expression]` each group field selects; `day` and `hour` differ per database. */
export function groupColumns(groupBy: readonly GroupField[], time: { day: string; hour: string }): [string, string][] {
  const expr: Record<GroupField, string> = { key: 'key_id', model: 'model', route: 'route', day: time.day, hour: time.hour };
  const alias: Record<GroupField, string> = { key: 'key_id', model: 'model', route: 'route', day: 'day', hour: 'hour_start' };
  return groupBy.map((g) => [alias[g], expr[g]]);
}

/** WHERE clause and its values; `param(i)` renders the i-th placeholder (`?` or `$i`). */
export function whereClause(q: UsageQuery, param: (i: number) => string, time: (ms: number) => unknown): { sql: string; values: unknown[] } {
  const parts: string[] = [];
  const values: unknown[] = [];
  const add = (sql: string, value: unknown): void => {
    values.push(value);
    parts.push(sql.replace('?', param(values.length)));
  };
  if (q.keyId !== undefined) add('key_id = ?', q.keyId);
  if (q.model !== undefined) add('model = ?', q.model);
  if (q.route !== undefined) add('route = ?', q.route);
  if (q.from !== undefined) add('hour >= ?', time(q.from));
  if (q.to !== undefined) add('hour < ?', time(q.to));
  return { sql: parts.length ? `WHERE ${parts.join(' AND ')}` : '', values };
}

export interface SumRow {
  key_id?: string;
  model?: string;
  route?: string;
  day?: number | string | Date;
  hour_start?: number | string | Date;
  requests: number | string | null;
  prompt_tokens: number | string | null;
  cached_prompt_tokens: number | string | null;
  completion_tokens: number | string | null;
  cache_hits: number | string | null;
  errors: number | string | null;
}

const num = (v: number | string | null | undefined): number => Number(v ?? 0);
const ms = (v: number | string | Date): number => (v instanceof Date ? v.getTime() : Number(v));

/** A database row (numbers may arrive as strings from PostgreSQL's bigint sums) as a UsageRow. */
export function toUsageRow(r: SumRow): UsageRow {
  const counts: UsageCounts = {
    requests: num(r.requests),
    promptTokens: num(r.prompt_tokens),
    cachedPromptTokens: num(r.cached_prompt_tokens),
    completionTokens: num(r.completion_tokens),
    cacheHits: num(r.cache_hits),
    errors: num(r.errors),
  };
  return {
    ...(r.key_id !== undefined ? { keyId: r.key_id } : {}),
    ...(r.model !== undefined ? { model: r.model } : {}),
    ...(r.route !== undefined ? { route: r.route } : {}),
    ...(r.day !== undefined ? { day: ms(r.day) } : {}),
    ...(r.hour_start !== undefined ? { hour: ms(r.hour_start) } : {}),
    ...counts,
  };
}

/** ORDER BY: time groups first (oldest first), then the heaviest groups. */
export function orderBy(groupBy: readonly GroupField[]): string {
  const time = groupBy.filter((g) => g === 'day' || g === 'hour').map((g) => (g === 'hour' ? 'hour_start' : 'day'));
  const rest = groupBy.filter((g) => g !== 'day' && g !== 'hour').map((g) => (g === 'key' ? 'key_id' : g));
  return ['ORDER BY', [...time, 'SUM(prompt_tokens) + SUM(completion_tokens) DESC', ...rest].join(', ')].join(' ');
}
