import Database from 'better-sqlite3';
import { migrateSqlite, openSqlite } from '@app/common';
import { AuthErrorCode, AuthException } from './auth.exception';
import { decodeModelLimits, decodeModels, decodeScopes, encodeModelLimits, encodeModels, encodeScopes, KeyRepository, updatedColumns } from './key.repository';
import { ApiKeyRecord, KeyChanges, NewKeyRecord, NO_BUDGET, PriorityClass } from './key.types';

interface Row {
  id: string;
  name: string;
  key_hash: string;
  key_hint: string;
  scopes: string;
  rpm: number;
  tpm: number;
  concurrency: number;
  budget_day: number;
  budget_month: number;
  models: string | null;
  model_limits: string | null;
  priority: string;
  created_at: number;
  last_used_at: number | null;
  expires_at: number | null;
  revoked_at: number | null;
}

/** Each entry upgrades the schema by one version; never edit a released one. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE api_keys (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     key_hash TEXT NOT NULL UNIQUE,
     key_hint TEXT NOT NULL,
     scopes TEXT NOT NULL,
     rpm INTEGER NOT NULL,
     tpm INTEGER NOT NULL,
     concurrency INTEGER NOT NULL,
     priority TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     last_used_at INTEGER,
     expires_at INTEGER,
     revoked_at INTEGER
   );
   CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;`,
  // Token budgets per UTC day and month (0 = none).
  `ALTER TABLE api_keys ADD COLUMN budget_day INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE api_keys ADD COLUMN budget_month INTEGER NOT NULL DEFAULT 0;`,
  // Models a key may use (comma list; NULL = every model) and its per-model limits (JSON).
  `ALTER TABLE api_keys ADD COLUMN models TEXT;
   ALTER TABLE api_keys ADD COLUMN model_limits TEXT NOT NULL DEFAULT '{}';`,
];

const date = (ms: number | null): Date | null => (ms === null ? null : new Date(ms));

function toRecord(r: Row): ApiKeyRecord {
  return {
    id: r.id,
    name: r.name,
    hash: r.key_hash,
    hint: r.key_hint,
    scopes: decodeScopes(r.scopes),
    limits: { rpm: r.rpm, tpm: r.tpm, concurrency: r.concurrency },
    budget: { day: r.budget_day, month: r.budget_month },
    models: decodeModels(r.models),
    modelLimits: decodeModelLimits(r.model_limits),
    priority: r.priority as PriorityClass,
    createdAt: new Date(r.created_at),
    lastUsedAt: date(r.last_used_at),
    expiresAt: date(r.expires_at),
    revokedAt: date(r.revoked_at),
  };
}

/**
 * Keys in a SQLite file (better-sqlite3). WAL mode and a busy timeout let the server and the
 * CLI use the file at the same time.
 */
export class SqliteKeyRepository extends KeyRepository {
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
    migrateSqlite(this.#conn, 'schema_migrations', MIGRATIONS);
  }

  async insert(key: NewKeyRecord): Promise<void> {
    try {
      this.#conn
        .prepare(
          `INSERT INTO api_keys (id, name, key_hash, key_hint, scopes, rpm, tpm, concurrency, budget_day, budget_month, models, model_limits, priority, created_at, expires_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          key.id,
          key.name,
          key.hash,
          key.hint,
          encodeScopes(key.scopes),
          key.limits.rpm,
          key.limits.tpm,
          key.limits.concurrency,
          (key.budget ?? NO_BUDGET).day,
          (key.budget ?? NO_BUDGET).month,
          encodeModels(key.models),
          encodeModelLimits(key.modelLimits),
          key.priority,
          key.createdAt.getTime(),
          key.expiresAt?.getTime() ?? null,
        );
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE' && /name/.test((err as Error).message)) {
        throw new AuthException(AuthErrorCode.KeyNameTaken, `A key named "${key.name}" already exists; revoke it or pick another name`);
      }
      throw err;
    }
  }

  async findByHash(hash: string): Promise<ApiKeyRecord | null> {
    return this.#one('SELECT * FROM api_keys WHERE key_hash = ?', hash);
  }

  async findById(id: string): Promise<ApiKeyRecord | null> {
    return this.#one('SELECT * FROM api_keys WHERE id = ?', id);
  }

  async findByName(name: string): Promise<ApiKeyRecord | null> {
    return this.#one(
      'SELECT * FROM api_keys WHERE name = ? ORDER BY (revoked_at IS NULL) DESC, created_at DESC, rowid DESC LIMIT 1',
      name,
    );
  }

  async list(): Promise<ApiKeyRecord[]> {
    return (this.#conn.prepare('SELECT * FROM api_keys ORDER BY created_at, rowid').all() as Row[]).map(toRecord);
  }

  async revoke(id: string, at: Date): Promise<boolean> {
    const r = this.#conn.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(at.getTime(), id);
    return r.changes > 0;
  }

  async replaceSecret(id: string, hash: string, hint: string): Promise<boolean> {
    const r = this.#conn
      .prepare('UPDATE api_keys SET key_hash = ?, key_hint = ? WHERE id = ? AND revoked_at IS NULL')
      .run(hash, hint, id);
    return r.changes > 0;
  }

  async update(id: string, changes: KeyChanges): Promise<boolean> {
    const columns = updatedColumns(changes);
    if (columns.length === 0) return (await this.findById(id))?.revokedAt === null;
    const values = columns.map(([, v]) => (v instanceof Date ? v.getTime() : v));
    const r = this.#conn
      .prepare(`UPDATE api_keys SET ${columns.map(([c]) => `${c} = ?`).join(', ')} WHERE id = ? AND revoked_at IS NULL`)
      .run(...values, id);
    return r.changes > 0;
  }

  async touch(lastUsed: ReadonlyMap<string, Date>): Promise<void> {
    if (lastUsed.size === 0) return;
    const stmt = this.#conn.prepare(
      'UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)',
    );
    this.#conn.transaction(() => {
      for (const [id, at] of lastUsed) stmt.run(at.getTime(), id, at.getTime());
    })();
  }

  async close(): Promise<void> {
    this.#db?.close();
    this.#db = null;
  }

  #one(sql: string, arg: string): ApiKeyRecord | null {
    const row = this.#conn.prepare(sql).get(arg) as Row | undefined;
    return row ? toRecord(row) : null;
  }
}
