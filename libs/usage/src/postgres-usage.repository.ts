import { Logger } from '@nestjs/common';
import { Pool, PoolClient } from 'pg';
import { migratePostgres, postgresPool, postgresSchema } from '@app/common';
import { UsageRepository } from './usage.repository';
import { groupColumns, orderBy, SumRow, SUMS, toUsageRow, whereClause } from './usage.sql';
import { BudgetPeriod, ReserveOutcome, UsageBucket, UsageQuery, UsageRow } from './usage.types';

/** Each entry upgrades the usage tables by one version; `%s` is the schema. Never edit a released one. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE %s.usage_ledger (
     key_id text NOT NULL,
     model text NOT NULL,
     route text NOT NULL,
     hour timestamptz NOT NULL,
     requests bigint NOT NULL DEFAULT 0,
     prompt_tokens bigint NOT NULL DEFAULT 0,
     cached_prompt_tokens bigint NOT NULL DEFAULT 0,
     completion_tokens bigint NOT NULL DEFAULT 0,
     cache_hits bigint NOT NULL DEFAULT 0,
     errors bigint NOT NULL DEFAULT 0,
     PRIMARY KEY (key_id, model, route, hour)
   );
   CREATE INDEX usage_ledger_hour ON %s.usage_ledger (hour);
   CREATE TABLE %s.usage_batches (id text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT now());
   CREATE TABLE %s.budget_counters (
     key_id text NOT NULL,
     period text NOT NULL,
     used bigint NOT NULL,
     updated_at timestamptz NOT NULL,
     PRIMARY KEY (key_id, period)
   );`,
];

/** Serialises concurrent migrations of the usage tables (the key store uses another lock). */
const MIGRATION_LOCK = 0x6c6c6d75;

/** Options of {@link PostgresUsageRepository}. */
export interface PostgresUsageOptions {
  readonly connectionString: string;
  /** Schema holding the tables (the key store's, DATABASE_SCHEMA). Default `public`. */
  readonly schema?: string;
  /** Longest wait for a connection or a query, in ms. Default 3000. */
  readonly timeoutMs?: number;
}

/**
 * The ledger in PostgreSQL, shared by every replica. Each flush is one transaction that marks its
 * batch id and upserts its buckets with `ON CONFLICT DO UPDATE SET n = n + excluded.n`: replicas
 * writing the same bucket at once add up (the row lock orders them), and a batch retried after
 * a lost answer is not added twice. Buckets are written in key order so that two replicas'
 * transactions take their row locks in the same order (no deadlock).
 */
export class PostgresUsageRepository extends UsageRepository {
  readonly description: string;
  readonly #logger = new Logger('UsageLedger');
  readonly #pool: Pool;
  readonly #schema: string;

  constructor(options: PostgresUsageOptions) {
    super();
    this.#schema = postgresSchema(options.schema);
    this.description = `postgres:${this.#schema}`;
    this.#pool = postgresPool(options.connectionString, { max: 4, timeoutMs: options.timeoutMs, logger: this.#logger });
  }

  #t(table: string): string {
    return `"${this.#schema}".${table}`;
  }

  async migrate(): Promise<void> {
    await this.#transaction((client) =>
      migratePostgres(client, { schema: this.#schema, versionsTable: 'usage_schema_migrations', lock: MIGRATION_LOCK, migrations: MIGRATIONS }),
    );
  }

  async write(batchId: string, buckets: readonly UsageBucket[]): Promise<void> {
    const sorted = [...buckets].sort((a, b) => compare(a, b));
    const column = <K extends keyof UsageBucket>(k: K): UsageBucket[K][] => sorted.map((b) => b[k]);
    await this.#transaction(async (client) => {
      const marked = await client.query(`INSERT INTO ${this.#t('usage_batches')} (id) VALUES ($1) ON CONFLICT DO NOTHING`, [batchId]);
      if (marked.rowCount === 0 || sorted.length === 0) return; // written before
      await client.query(
        `INSERT INTO ${this.#t('usage_ledger')} AS l
           (key_id, model, route, hour, requests, prompt_tokens, cached_prompt_tokens, completion_tokens, cache_hits, errors)
         SELECT k, m, r, to_timestamp(h / 1000.0), q, p, c, o, ch, e
           FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
             AS u(k, m, r, h, q, p, c, o, ch, e)
         ON CONFLICT (key_id, model, route, hour) DO UPDATE SET
           requests = l.requests + excluded.requests,
           prompt_tokens = l.prompt_tokens + excluded.prompt_tokens,
           cached_prompt_tokens = l.cached_prompt_tokens + excluded.cached_prompt_tokens,
           completion_tokens = l.completion_tokens + excluded.completion_tokens,
           cache_hits = l.cache_hits + excluded.cache_hits,
           errors = l.errors + excluded.errors`,
        [
          column('keyId'),
          column('model'),
          column('route'),
          column('hour'),
          column('requests'),
          column('promptTokens'),
          column('cachedPromptTokens'),
          column('completionTokens'),
          column('cacheHits'),
          column('errors'),
        ],
      );
    });
  }

  async query(q: UsageQuery): Promise<UsageRow[]> {
    const groups = groupColumns(q.groupBy, {
      day: `(date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')`,
      hour: 'hour',
    });
    const where = whereClause(q, (i) => `$${i}`, (ms) => new Date(ms));
    const select = [...groups.map(([alias, expr]) => `${expr} AS ${alias}`), SUMS].join(', ');
    const group = groups.length ? `GROUP BY ${groups.map(([alias]) => alias).join(', ')}` : '';
    const sql = `SELECT ${select} FROM ${this.#t('usage_ledger')} ${where.sql} ${group} ${groups.length ? orderBy(q.groupBy) : ''}`;
    const { rows } = await this.#pool.query<SumRow>(sql, where.values);
    return rows.map(toUsageRow);
  }

  async ledgerTokens(keyId: string, from: number, to: number): Promise<number> {
    const { rows } = await this.#pool.query<{ n: string }>(
      `SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS n FROM ${this.#t('usage_ledger')} WHERE key_id = $1 AND hour >= $2 AND hour < $3`,
      [keyId, new Date(from), new Date(to)],
    );
    return Number(rows[0].n);
  }

  async reserveBudget(keyId: string, periods: readonly BudgetPeriod[], tokens: number, now: number): Promise<ReserveOutcome> {
    return this.#transaction(async (client) => {
      const used = await this.#seedAndLock(client, keyId, periods, now);
      if (periods.some((p, i) => used[i] >= p.limit)) return { ok: false, used };
      await client.query(`UPDATE ${this.#t('budget_counters')} SET used = used + $3, updated_at = $4 WHERE key_id = $1 AND period = ANY($2)`, [
        keyId,
        periods.map((p) => p.id),
        tokens,
        new Date(now),
      ]);
      return { ok: true, used };
    });
  }

  async adjustBudget(keyId: string, periodIds: readonly string[], delta: number, now: number): Promise<void> {
    await this.#pool.query(
      `UPDATE ${this.#t('budget_counters')} SET used = GREATEST(0, used + $3), updated_at = $4 WHERE key_id = $1 AND period = ANY($2)`,
      [keyId, [...periodIds], delta, new Date(now)],
    );
  }

  async readBudget(keyId: string, periods: readonly BudgetPeriod[], now: number): Promise<number[]> {
    return this.#transaction((client) => this.#seedAndLock(client, keyId, periods, now, false));
  }

  async prune(before: number): Promise<void> {
    await this.#pool.query(`DELETE FROM ${this.#t('budget_counters')} WHERE updated_at < $1`, [new Date(before)]);
    await this.#pool.query(`DELETE FROM ${this.#t('usage_batches')} WHERE written_at < $1`, [new Date(before)]);
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }

  /** Seeds missing counters from the ledger, then reads them (locked for update when `lock`). */
  async #seedAndLock(client: PoolClient, keyId: string, periods: readonly BudgetPeriod[], now: number, lock = true): Promise<number[]> {
    const ordered = [...periods].sort((a, b) => a.id.localeCompare(b.id));
    for (const p of ordered) {
      await client.query(
        `INSERT INTO ${this.#t('budget_counters')} (key_id, period, used, updated_at)
         SELECT $1, $2, COALESCE(SUM(prompt_tokens + completion_tokens), 0), $5 FROM ${this.#t('usage_ledger')}
          WHERE key_id = $1 AND hour >= $3 AND hour < $4
         ON CONFLICT DO NOTHING`,
        [keyId, p.id, new Date(p.start), new Date(p.end), new Date(now)],
      );
    }
    const { rows } = await client.query<{ period: string; used: string }>(
      `SELECT period, used FROM ${this.#t('budget_counters')} WHERE key_id = $1 AND period = ANY($2) ORDER BY period${lock ? ' FOR UPDATE' : ''}`,
      [keyId, ordered.map((p) => p.id)],
    );
    const byId = new Map(rows.map((r) => [r.period, Number(r.used)]));
    return periods.map((p) => byId.get(p.id) ?? 0);
  }

  async #transaction<T>(work: (client: PoolClient) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect();
    let failure: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      failure = err as Error;
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      // A connection that failed mid-transaction is discarded rather than reused.
      client.release(failure);
    }
  }
}

function compare(a: UsageBucket, b: UsageBucket): number {
  return a.keyId.localeCompare(b.keyId) || a.model.localeCompare(b.model) || a.route.localeCompare(b.route) || a.hour - b.hour;
}
