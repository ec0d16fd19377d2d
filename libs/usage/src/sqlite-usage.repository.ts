import Database from 'better-sqlite3';
import { migrateSqlite, openSqlite } from '@app/common';
import { UsageRepository } from './usage.repository';
import { groupColumns, orderBy, SumRow, SUMS, toUsageRow, whereClause } from './usage.sql';
import { BudgetPeriod, ReserveOutcome, UsageBucket, UsageQuery, UsageRow } from './usage.types';

/** Each entry upgrades the usage tables by one version; never edit a released one. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE usage_ledger (
     key_id TEXT NOT NULL,
     model TEXT NOT NULL,
     route TEXT NOT NULL,
     hour INTEGER NOT NULL,
     requests INTEGER NOT NULL DEFAULT 0,
     prompt_tokens INTEGER NOT NULL DEFAULT 0,
     cached_prompt_tokens INTEGER NOT NULL DEFAULT 0,
     completion_tokens INTEGER NOT NULL DEFAULT 0,
     cache_hits INTEGER NOT NULL DEFAULT 0,
     errors INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (key_id, model, route, hour)
   );
   CREATE INDEX usage_ledger_hour ON usage_ledger (hour);
   CREATE TABLE usage_batches (id TEXT PRIMARY KEY, written_at INTEGER NOT NULL);
   CREATE TABLE budget_counters (
     key_id TEXT NOT NULL,
     period TEXT NOT NULL,
     used INTEGER NOT NULL,
     updated_at INTEGER NOT NULL,
     PRIMARY KEY (key_id, period)
   );`,
];

/**
 * The ledger in the SQLite key store file (`DATA_DIR/keys.db`), through its own connection.
 * SQLite has one writer at a time, so every multi-statement operation is one IMMEDIATE
 * transaction: atomic for this process and for any other using the file (the CLI).
 */
export class SqliteUsageRepository extends UsageRepository {
  readonly description: string;
  #db: Database.Database | null = null;

  constructor(private readonly file: string) {
    super();
    this.description = `sqlite:${file}`;
  }

  get #conn(): Database.Database {
    return (this.#db ??= openSqlite(this.file));
  }

  async migrate(): Promise<void> {
    migrateSqlite(this.#conn, 'usage_schema_migrations', MIGRATIONS);
  }

  async write(batchId: string, buckets: readonly UsageBucket[]): Promise<void> {
    const db = this.#conn;
    const mark = db.prepare('INSERT OR IGNORE INTO usage_batches (id, written_at) VALUES (?, ?)');
    const upsert = db.prepare(
      `INSERT INTO usage_ledger (key_id, model, route, hour, requests, prompt_tokens, cached_prompt_tokens, completion_tokens, cache_hits, errors)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (key_id, model, route, hour) DO UPDATE SET
         requests = requests + excluded.requests,
         prompt_tokens = prompt_tokens + excluded.prompt_tokens,
         cached_prompt_tokens = cached_prompt_tokens + excluded.cached_prompt_tokens,
         completion_tokens = completion_tokens + excluded.completion_tokens,
         cache_hits = cache_hits + excluded.cache_hits,
         errors = errors + excluded.errors`,
    );
    db.transaction(() => {
      if (mark.run(batchId, Date.now()).changes === 0) return; // written before
      for (const b of buckets) {
        upsert.run(b.keyId, b.model, b.route, b.hour, b.requests, b.promptTokens, b.cachedPromptTokens, b.completionTokens, b.cacheHits, b.errors);
      }
    }).immediate();
  }

  async query(q: UsageQuery): Promise<UsageRow[]> {
    const groups = groupColumns(q.groupBy, { day: '(hour / 86400000) * 86400000', hour: 'hour' });
    const where = whereClause(q, () => '?', (ms) => ms);
    const select = [...groups.map(([alias, expr]) => `${expr} AS ${alias}`), SUMS].join(', ');
    const group = groups.length ? `GROUP BY ${groups.map(([alias]) => alias).join(', ')}` : '';
    const sql = `SELECT ${select} FROM usage_ledger ${where.sql} ${group} ${groups.length ? orderBy(q.groupBy) : ''}`;
    const rows = this.#conn.prepare(sql).all(...(where.values as (string | number)[])) as SumRow[];
    // Without a group, SQLite returns one row of NULL sums for an empty range: that is a zero.
    return rows.map(toUsageRow);
  }

  async ledgerTokens(keyId: string, from: number, to: number): Promise<number> {
    const row = this.#conn
      .prepare('SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS n FROM usage_ledger WHERE key_id = ? AND hour >= ? AND hour < ?')
      .get(keyId, from, to) as { n: number };
    return row.n;
  }

  async reserveBudget(keyId: string, periods: readonly BudgetPeriod[], tokens: number, now: number): Promise<ReserveOutcome> {
    const db = this.#conn;
    return db.transaction((): ReserveOutcome => {
      const used = this.#seedAndRead(keyId, periods, now);
      if (periods.some((p, i) => used[i] >= p.limit)) return { ok: false, used };
      const add = db.prepare('UPDATE budget_counters SET used = used + ?, updated_at = ? WHERE key_id = ? AND period = ?');
      for (const p of periods) add.run(tokens, now, keyId, p.id);
      return { ok: true, used };
    }).immediate();
  }

  async adjustBudget(keyId: string, periodIds: readonly string[], delta: number, now: number): Promise<void> {
    const db = this.#conn;
    const stmt = db.prepare('UPDATE budget_counters SET used = MAX(0, used + ?), updated_at = ? WHERE key_id = ? AND period = ?');
    db.transaction(() => {
      for (const id of periodIds) stmt.run(delta, now, keyId, id);
    }).immediate();
  }

  async readBudget(keyId: string, periods: readonly BudgetPeriod[], now: number): Promise<number[]> {
    return this.#conn.transaction(() => this.#seedAndRead(keyId, periods, now)).immediate();
  }

  async prune(before: number): Promise<void> {
    const db = this.#conn;
    db.prepare('DELETE FROM budget_counters WHERE updated_at < ?').run(before);
    db.prepare('DELETE FROM usage_batches WHERE written_at < ?').run(before);
  }

  async close(): Promise<void> {
    this.#db?.close();
    this.#db = null;
  }

  /** Inside a transaction: creates missing counters from the ledger, returns the counters. */
  #seedAndRead(keyId: string, periods: readonly BudgetPeriod[], now: number): number[] {
    const db = this.#conn;
    const seed = db.prepare(
      `INSERT OR IGNORE INTO budget_counters (key_id, period, used, updated_at)
       VALUES (?, ?, (SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage_ledger WHERE key_id = ? AND hour >= ? AND hour < ?), ?)`,
    );
    const read = db.prepare('SELECT used FROM budget_counters WHERE key_id = ? AND period = ?');
    return periods.map((p) => {
      seed.run(keyId, p.id, keyId, p.start, p.end, now);
      return (read.get(keyId, p.id) as { used: number }).used;
    });
  }
}
