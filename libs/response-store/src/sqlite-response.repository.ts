import Database from 'better-sqlite3';
import { migrateSqlite, openSqlite } from '@app/common';
import { ResponseRepository } from './response.repository';
import { StoredResponse } from './response-store.types';

/** Each entry upgrades the table by one version; never edit a released one. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE stored_responses (
     id TEXT PRIMARY KEY,
     key_id TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL,
     previous_id TEXT,
     input TEXT NOT NULL,
     context TEXT NOT NULL,
     response TEXT NOT NULL
   );
   CREATE INDEX stored_responses_expiry ON stored_responses (expires_at);`,
];

interface Row {
  id: string;
  key_id: string;
  created_at: number;
  expires_at: number;
  previous_id: string | null;
  input: string;
  context: string;
  response: string;
}

function toStored(r: Row): StoredResponse {
  return {
    id: r.id,
    keyId: r.key_id,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    previousId: r.previous_id,
    input: JSON.parse(r.input) as unknown[],
    context: JSON.parse(r.context) as unknown[],
    response: JSON.parse(r.response) as Record<string, unknown>,
  };
}

/** Stored responses in the SQLite key store file (`DATA_DIR/keys.db`), through their own connection. */
export class SqliteResponseRepository extends ResponseRepository {
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
    migrateSqlite(this.#conn, 'responses_schema_migrations', MIGRATIONS);
  }

  async insert(r: StoredResponse): Promise<void> {
    this.#conn
      .prepare('INSERT INTO stored_responses (id, key_id, created_at, expires_at, previous_id, input, context, response) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(r.id, r.keyId, r.createdAt, r.expiresAt, r.previousId, JSON.stringify(r.input), JSON.stringify(r.context), JSON.stringify(r.response));
  }

  async find(id: string, keyId: string, now: number): Promise<StoredResponse | null> {
    const row = this.#conn.prepare('SELECT * FROM stored_responses WHERE id = ? AND key_id = ? AND expires_at > ?').get(id, keyId, now) as Row | undefined;
    return row ? toStored(row) : null;
  }

  async delete(id: string, keyId: string, now: number): Promise<boolean> {
    return this.#conn.prepare('DELETE FROM stored_responses WHERE id = ? AND key_id = ? AND expires_at > ?').run(id, keyId, now).changes > 0;
  }

  async prune(now: number): Promise<number> {
    return this.#conn.prepare('DELETE FROM stored_responses WHERE expires_at <= ?').run(now).changes;
  }

  async close(): Promise<void> {
    this.#db?.close();
    this.#db = null;
  }
}
