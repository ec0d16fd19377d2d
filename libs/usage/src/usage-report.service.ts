import { Injectable, Inject } from '@nestjs/common';
import type { UsageConfig } from './usage.config';
import { ANONYMOUS, ApiKeysService, hashKey } from '@app/auth';
import { AppConfig } from '@app/common';
import { Clock, DAY_MS, HOUR_MS, hourOf } from './clock';
import { UsageErrorCode, UsageException } from './usage.exception';
import { UsageRepository } from './usage.repository';
import { GROUP_FIELDS, GroupField, UsageCounts, UsageQuery, UsageRow, ZERO_COUNTS, addCounts } from './usage.types';

/** A usage question as the HTTP API and the CLI ask it (strings, as typed). */
export interface UsageRequest {
  /** Key id (`key_…`) or name. */
  readonly key?: string;
  readonly model?: string;
  readonly route?: string;
  /** ISO date or date-time, or a duration back from now (`7d`, `24h`, `90m`). Default: 30 days ago. */
  readonly from?: string;
  /** Same forms; exclusive. Default: now. */
  readonly to?: string;
  /** Comma list of key, model, route, day, hour. Default `key`. */
  readonly groupBy?: string;
}

/** One report line as the API and `--json` print it (snake_case, ISO times, totals). */
export interface UsageLine {
  key_id?: string;
  key_name?: string | null;
  model?: string;
  route?: string;
  day?: string;
  hour?: string;
  requests: number;
  prompt_tokens: number;
  cached_prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cache_hits: number;
  errors: number;
}

export interface UsageReport {
  readonly object: 'usage';
  readonly from: string;
  readonly to: string;
  readonly group_by: readonly GroupField[];
  readonly data: UsageLine[];
  readonly totals: UsageLine;
}

const invalid = (message: string, param: string): UsageException => new UsageException(UsageErrorCode.InvalidUsageQuery, message, { param });
const DURATION = /^(\d+)\s*(m|h|d|w)$/i;
const UNIT_MS: Record<string, number> = { m: 60_000, h: HOUR_MS, d: DAY_MS, w: 7 * DAY_MS };
const DEFAULT_RANGE_MS = 30 * DAY_MS;

/** `7d` → now − 7 days; an ISO date or date-time → that time. */
export function parseTime(text: string, now: number, param: string): number {
  const t = text.trim();
  const d = DURATION.exec(t);
  if (d) return now - Number(d[1]) * UNIT_MS[d[2].toLowerCase()];
  const at = /^\d{4}-\d{2}-\d{2}/.test(t) ? Date.parse(t) : NaN;
  if (Number.isNaN(at)) throw invalid(`${param} must be an ISO date or date-time (2026-01-31, 2026-01-31T12:00:00Z) or a duration back from now (90m, 24h, 7d, 4w) (got ${JSON.stringify(text)})`, param);
  return at;
}

export function parseGroupBy(text: string | undefined): GroupField[] {
  if (text === undefined || text.trim() === '') return ['key'];
  const fields = [...new Set(text.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s.length > 0))];
  const unknown = fields.filter((f) => !(GROUP_FIELDS as readonly string[]).includes(f));
  if (fields.length === 0 || unknown.length > 0) throw invalid(`group_by must be a comma list of ${GROUP_FIELDS.join(', ')} (got ${JSON.stringify(text)})`, 'group_by');
  if (fields.includes('day') && fields.includes('hour')) throw invalid('group_by takes day or hour, not both', 'group_by');
  return fields as GroupField[];
}

function line(row: Partial<UsageRow> & UsageCounts, names: ReadonlyMap<string, string>): UsageLine {
  return {
    ...(row.keyId !== undefined ? { key_id: row.keyId, key_name: names.get(row.keyId) ?? null } : {}),
    ...(row.model !== undefined ? { model: row.model } : {}),
    ...(row.route !== undefined ? { route: row.route } : {}),
    ...(row.day !== undefined ? { day: new Date(row.day).toISOString().slice(0, 10) } : {}),
    ...(row.hour !== undefined ? { hour: new Date(row.hour).toISOString() } : {}),
    requests: row.requests,
    prompt_tokens: row.promptTokens,
    cached_prompt_tokens: row.cachedPromptTokens,
    completion_tokens: row.completionTokens,
    total_tokens: row.promptTokens + row.completionTokens,
    cache_hits: row.cacheHits,
    errors: row.errors,
  };
}

/**
 * Usage reports from the ledger, for `GET /admin/usage`, `GET /v1/usage` and the CLI's `usage`.
 * Hour precision: `from` is rounded down and `to` up to whole hours. Reads what has been written:
 * each replica's last USAGE_FLUSH_INTERVAL_MS may not be there yet (the server flushes its own
 * buffer before answering).
 */
@Injectable()
export class UsageReportService {
  constructor(
    private readonly repo: UsageRepository,
    private readonly keys: ApiKeysService,
    private readonly clock: Clock,
    @Inject(AppConfig) private readonly config: UsageConfig,
  ) {}

  /** Names of every key id the ledger may hold: stored keys, API_KEYS (as the server names them), anonymous. */
  async #names(): Promise<Map<string, string>> {
    const names = new Map((await this.keys.list()).map((k) => [k.id, k.name]));
    this.config.apiKeys.forEach((key, i) => names.set(`static:${hashKey(key).slice(0, 12)}`, `API_KEYS[${i}]`));
    names.set(ANONYMOUS.id, ANONYMOUS.name);
    return names;
  }

  /** Parses the request; `ownKeyId` pins the key (the caller's own usage). */
  async report(request: UsageRequest, ownKeyId?: string): Promise<UsageReport> {
    const now = this.clock.now();
    const to = request.to !== undefined ? parseTime(request.to, now, 'to') : now;
    const from = request.from !== undefined ? parseTime(request.from, now, 'from') : to - DEFAULT_RANGE_MS;
    if (from >= to) throw invalid(`from must be before to (${new Date(from).toISOString()} >= ${new Date(to).toISOString()})`, 'from');
    const groupBy = parseGroupBy(request.groupBy);
    let keyId = ownKeyId;
    if (keyId === undefined && request.key !== undefined && request.key.trim() !== '') keyId = (await this.keys.resolve(request.key.trim())).id;
    const query: UsageQuery = {
      keyId,
      model: request.model?.trim() || undefined,
      route: request.route?.trim() || undefined,
      from: hourOf(from),
      to: hourOf(to - 1) + HOUR_MS,
      groupBy,
    };
    await this.repo.ready();
    const rows = await this.repo.query(query);
    const names = groupBy.includes('key') && ownKeyId === undefined ? await this.#names() : new Map<string, string>();
    const totals = rows.reduce<UsageCounts>((sum, r) => addCounts(sum, r), ZERO_COUNTS);
    return {
      object: 'usage',
      from: new Date(query.from as number).toISOString(),
      to: new Date(query.to as number).toISOString(),
      group_by: groupBy,
      data: rows.map((r) => line(r, names)),
      totals: line(totals, names),
    };
  }
}
