import { Logger } from '@nestjs/common';
import { Pool, PoolClient } from 'pg';
import { migratePostgres, postgresPool, postgresSchema } from '@app/common';
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
  budget_day: string | number;
  budget_month: string | number;
  models: string | null;
  model_limits: string | null;
  priority: string;
  created_at: Date;
  last_used_at: Date | null;
  expires_at: Date | null;
  revoked_at: Date | null;
}

/** Each entry upgrades the schema by one version; `%s` is the schema. Never edit a released one. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE %s.api_keys (
     id text PRIMARY KEY,
     name text NOT NULL,
     key_hash text NOT NULL UNIQUE,
     key_hint text NOT NULL,
     scopes text NOT NULL,
     rpm integer NOT NULL,
     tpm integer NOT NULL,
     concurrency integer NOT NULL,
     priority text NOT NULL,
     created_at timestamptz NOT NULL,
     last_used_at timestamptz,
     expires_at timestamptz,
     revoked_at timestamptz
   );
   CREATE UNIQUE INDEX api_keys_active_name ON %s.api_keys (name) WHERE revoked_at IS NULL;`,
  // Token budgets per UTC day and month (0 = none).
  `ALTER TABLE %s.api_keys ADD COLUMN budget_day bigint NOT NULL DEFAULT 0,
                           ADD COLUMN budget_month bigint NOT NULL DEFAULT 0;`,
  // Models a key may use (comma list; NULL = every model) and its per-model limits (JSON).
  `ALTER TABLE %s.api_keys ADD COLUMN models text,
                           ADD COLUMN model_limits text NOT NULL DEFAULT '{}';`,
];

/** Any constant shared by every replica: serialises concurrent migrations. */
const MIGRATION_LOCK = 0x6c6c6d6b;

function toRecord(r: Row): ApiKeyRecord {
  return {
    id: r.id,
    name: r.name,
    hash: r.key_hash,
    hint: r.key_hint,
    scopes: decodeScopes(r.scopes),
    limits: { rpm: r.rpm, tpm: r.tpm, concurrency: r.concurrency },
    // bigint columns arrive as strings from node-postgres; budgets stay far below 2^53.
    budget: { day: Number(r.budget_day), month: Number(r.budget_month) },
    models: decodeModels(r.models),
    modelLimits: decodeModelLimits(r.model_limits),
    priority: r.priority as PriorityClass,
    createdAt: r.created_at,
    lastUsedAt: r.last_used_at,
    expiresAt: r.expires_at,
    revokedAt: r.revoked_at,
  };
}

/** Options of {@link PostgresKeyRepository}. */
export interface PostgresKeyOptions {
  readonly connectionString: string;
  /** Schema holding the tables; created by `migrate()`. Default `public`. */
  readonly schema?: string;
  /** Longest wait for a connection or a query, in ms, before the call fails. Default 3000. */
  readonly timeoutMs?: number;
}

/** Keys in PostgreSQL (node-postgres pool), shared by every replica. */
export class PostgresKeyRepository extends KeyRepository {
  readonly description: string;
  readonly #logger = new Logger('KeyStore');
  readonly #pool: Pool;
  readonly #table: string;
  readonly #schema: string;

  constructor(options: PostgresKeyOptions) {
    super();
    this.#schema = postgresSchema(options.schema);
    this.#table = `"${this.#schema}".api_keys`;
    this.description = `postgres:${this.#schema}`;
    this.#pool = postgresPool(options.connectionString, { max: 5, timeoutMs: options.timeoutMs, logger: this.#logger });
  }

  async migrate(): Promise<void> {
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      await migratePostgres(client, { schema: this.#schema, versionsTable: 'schema_migrations', lock: MIGRATION_LOCK, migrations: MIGRATIONS });
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      this.#release(client);
    }
  }

  async insert(key: NewKeyRecord): Promise<void> {
    try {
      await this.#pool.query(
        `INSERT INTO ${this.#table} (id, name, key_hash, key_hint, scopes, rpm, tpm, concurrency, budget_day, budget_month, models, model_limits, priority, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
        [
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
          key.createdAt,
          key.expiresAt,
        ],
      );
    } catch (err) {
      if ((err as { code?: string; constraint?: string }).code === '23505' && (err as { constraint?: string }).constraint === 'api_keys_active_name') {
        throw new AuthException(AuthErrorCode.KeyNameTaken, `A key named "${key.name}" already exists; revoke it or pick another name`);
      }
      throw err;
    }
  }

  async findByHash(hash: string): Promise<ApiKeyRecord | null> {
    return this.#one(`SELECT * FROM ${this.#table} WHERE key_hash = $1`, hash);
  }

  async findById(id: string): Promise<ApiKeyRecord | null> {
    return this.#one(`SELECT * FROM ${this.#table} WHERE id = $1`, id);
  }

  async findByName(name: string): Promise<ApiKeyRecord | null> {
    return this.#one(
      `SELECT * FROM ${this.#table} WHERE name = $1 ORDER BY (revoked_at IS NULL) DESC, created_at DESC LIMIT 1`,
      name,
    );
  }

  async list(): Promise<ApiKeyRecord[]> {
    const { rows } = await this.#pool.query<Row>(`SELECT * FROM ${this.#table} ORDER BY created_at, id`);
    return rows.map(toRecord);
  }

  async revoke(id: string, at: Date): Promise<boolean> {
    const r = await this.#pool.query(`UPDATE ${this.#table} SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`, [at, id]);
    return (r.rowCount ?? 0) > 0;
  }

  async replaceSecret(id: string, hash: string, hint: string): Promise<boolean> {
    const r = await this.#pool.query(
      `UPDATE ${this.#table} SET key_hash = $1, key_hint = $2 WHERE id = $3 AND revoked_at IS NULL`,
      [hash, hint, id],
    );
    return (r.rowCount ?? 0) > 0;
  }

  async update(id: string, changes: KeyChanges): Promise<boolean> {
    const columns = updatedColumns(changes);
    if (columns.length === 0) return (await this.findById(id))?.revokedAt === null;
    const r = await this.#pool.query(
      `UPDATE ${this.#table} SET ${columns.map(([c], i) => `${c} = $${i + 1}`).join(', ')} WHERE id = $${columns.length + 1} AND revoked_at IS NULL`,
      [...columns.map(([, v]) => v), id],
    );
    return (r.rowCount ?? 0) > 0;
  }

  async touch(lastUsed: ReadonlyMap<string, Date>): Promise<void> {
    if (lastUsed.size === 0) return;
    // One statement for the whole batch: the flush costs one round trip whatever the key count.
    await this.#pool.query(
      `UPDATE ${this.#table} AS k SET last_used_at = u.at
         FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at)
        WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)`,
      [[...lastUsed.keys()], [...lastUsed.values()]],
    );
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }

  async #one(sql: string, arg: string): Promise<ApiKeyRecord | null> {
    const { rows } = await this.#pool.query<Row>(sql, [arg]);
    return rows[0] ? toRecord(rows[0]) : null;
  }

  #release(client: PoolClient): void {
    client.release();
  }
}
