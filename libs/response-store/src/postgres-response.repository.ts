import { Logger } from '@nestjs/common';
import { Pool } from 'pg';
import { migratePostgres, postgresPool, postgresSchema } from '@app/common';
import { ResponseRepository } from './response.repository';
import { StoredResponse } from './response-store.types';

/**
 * Each entry upgrades the table by one version; `%s` is the schema. Never edit a released one.
 * The JSON is kept as text, not jsonb: jsonb refuses a string holding U+0000, which a model's
 * output may contain.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE %s.stored_responses (
     id text PRIMARY KEY,
     key_id text NOT NULL,
     created_at timestamptz NOT NULL,
     expires_at timestamptz NOT NULL,
     previous_id text,
     input text NOT NULL,
     context text NOT NULL,
     response text NOT NULL
   );
   CREATE INDEX stored_responses_expiry ON %s.stored_responses (expires_at);`,
];

/** Serialises concurrent migrations of this table (the key store and the ledger use other locks). */
const MIGRATION_LOCK = 0x6c6c6d72;

interface Row {
  id: string;
  key_id: string;
  created_at: Date;
  expires_at: Date;
  previous_id: string | null;
  input: string;
  context: string;
  response: string;
}

/** Options of {@link PostgresResponseRepository}. */
export interface PostgresResponseOptions {
  readonly connectionString: string;
  /** Schema holding the table (the key store's, DATABASE_SCHEMA). Default `public`. */
  readonly schema?: string;
  /** Longest wait for a connection or a query, in ms. Default 3000. */
  readonly timeoutMs?: number;
}

/** Stored responses in PostgreSQL, shared by every replica (a response made on one is read on another). */
export class PostgresResponseRepository extends ResponseRepository {
  readonly description: string;
  readonly #logger = new Logger('ResponseStore');
  readonly #pool: Pool;
  readonly #schema: string;
  readonly #table: string;

  constructor(options: PostgresResponseOptions) {
    super();
    this.#schema = postgresSchema(options.schema);
    this.#table = `"${this.#schema}".stored_responses`;
    this.description = `postgres:${this.#schema}`;
    this.#pool = postgresPool(options.connectionString, { max: 4, timeoutMs: options.timeoutMs, logger: this.#logger });
  }

  async migrate(): Promise<void> {
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      await migratePostgres(client, { schema: this.#schema, versionsTable: 'responses_schema_migrations', lock: MIGRATION_LOCK, migrations: MIGRATIONS });
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  async insert(r: StoredResponse): Promise<void> {
    await this.#pool.query(
      `INSERT INTO ${this.#table} (id, key_id, created_at, expires_at, previous_id, input, context, response) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [r.id, r.keyId, new Date(r.createdAt), new Date(r.expiresAt), r.previousId, JSON.stringify(r.input), JSON.stringify(r.context), JSON.stringify(r.response)],
    );
  }

  async find(id: string, keyId: string, now: number): Promise<StoredResponse | null> {
    const { rows } = await this.#pool.query<Row>(`SELECT * FROM ${this.#table} WHERE id = $1 AND key_id = $2 AND expires_at > $3`, [id, keyId, new Date(now)]);
    const r = rows[0];
    if (!r) return null;
    return {
      id: r.id,
      keyId: r.key_id,
      createdAt: r.created_at.getTime(),
      expiresAt: r.expires_at.getTime(),
      previousId: r.previous_id,
      input: JSON.parse(r.input) as unknown[],
      context: JSON.parse(r.context) as unknown[],
      response: JSON.parse(r.response) as Record<string, unknown>,
    };
  }

  async delete(id: string, keyId: string, now: number): Promise<boolean> {
    const r = await this.#pool.query(`DELETE FROM ${this.#table} WHERE id = $1 AND key_id = $2 AND expires_at > $3`, [id, keyId, new Date(now)]);
    return (r.rowCount ?? 0) > 0;
  }

  async prune(now: number): Promise<number> {
    const r = await this.#pool.query(`DELETE FROM ${this.#table} WHERE expires_at <= $1`, [new Date(now)]);
    return r.rowCount ?? 0;
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }
}
