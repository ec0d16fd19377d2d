import { Logger } from '@nestjs/common';
import Database from 'better-sqlite3';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { Pool, PoolClient } from 'pg';

/**
 * The SQLite file the stores share (`DATA_DIR/keys.db` by default), opened by each store on its
 * own connection: folder 0700 and file 0600 (hashes and usage are nobody else's business; SQLite
 * gives its -wal/-shm files the same mode), WAL and a busy timeout so that the server and the CLI
 * can use the file at the same time.
 */
export function openSqlite(file: string): Database.Database {
  if (file !== ':memory:') {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    closeSync(openSync(file, 'a', 0o600));
  }
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 5000');
  return db;
}

/**
 * Applies the migrations a store's versions table does not list yet, in one IMMEDIATE transaction
 * (concurrent starters queue behind one migrator). Each store has its own versions table.
 */
export function migrateSqlite(db: Database.Database, versionsTable: string, migrations: readonly string[]): void {
  db.transaction(() => {
    db.exec(`CREATE TABLE IF NOT EXISTS ${versionsTable} (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`);
    const row = db.prepare(`SELECT MAX(version) AS v FROM ${versionsTable}`).get() as { v: number | null };
    for (let v = (row.v ?? 0) + 1; v <= migrations.length; v++) {
      db.exec(migrations[v - 1]);
      db.prepare(`INSERT INTO ${versionsTable} (version, applied_at) VALUES (?, ?)`).run(v, Date.now());
    }
  }).immediate();
}

/** A PostgreSQL schema name as the stores accept it (it is written into their statements). */
export function postgresSchema(schema = 'public'): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new Error(`Invalid schema name ${JSON.stringify(schema)}`);
  return schema;
}

/**
 * A store's connection pool: every wait (connection, query) bounded by `timeoutMs`, and an idle
 * client losing its connection logged instead of crashing the process (the next query reconnects).
 */
export function postgresPool(connectionString: string, options: { readonly max: number; readonly timeoutMs?: number; readonly logger: Logger }): Pool {
  const timeout = options.timeoutMs ?? 3000;
  const pool = new Pool({ connectionString, max: options.max, connectionTimeoutMillis: timeout, query_timeout: timeout, idleTimeoutMillis: 30_000 });
  pool.on('error', (err) => options.logger.warn(`PostgreSQL connection lost: ${err.message}`));
  return pool;
}

/**
 * Applies a store's missing migrations inside the caller's transaction: an advisory lock (one per
 * store) serialises replicas starting together; `%s` in a migration is the quoted schema.
 */
export async function migratePostgres(
  client: PoolClient,
  store: { readonly schema: string; readonly versionsTable: string; readonly lock: number; readonly migrations: readonly string[] },
): Promise<void> {
  const schema = `"${store.schema}"`;
  const versions = `${schema}.${store.versionsTable}`;
  await client.query('SELECT pg_advisory_xact_lock($1)', [store.lock]);
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  await client.query(`CREATE TABLE IF NOT EXISTS ${versions} (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
  const { rows } = await client.query<{ v: number | null }>(`SELECT MAX(version) AS v FROM ${versions}`);
  for (let v = (rows[0].v ?? 0) + 1; v <= store.migrations.length; v++) {
    await client.query(store.migrations[v - 1].replaceAll('%s', schema));
    await client.query(`INSERT INTO ${versions} (version) VALUES ($1)`, [v]);
  }
}

/**
 * A store whose tables are migrated on first use: `ready()` migrates once (callers await it
 * before their first query); a failed attempt is retried on the next call.
 */
export abstract class MigratedStore {
  #ready: Promise<void> | null = null;

  /** `sqlite:<file>` or `postgres:<schema>`: for logs, never credentials. */
  abstract readonly description: string;
  /** Creates or upgrades the store's tables; safe to run concurrently from several processes. */
  abstract migrate(): Promise<void>;

  /** Resolves once the tables are current. */
  ready(): Promise<void> {
    this.#ready ??= this.migrate().catch((err: unknown) => {
      this.#ready = null;
      throw err;
    });
    return this.#ready;
  }
}
