import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Logger } from '@nestjs/common';
import { Client } from 'pg';
import { AppConfig } from '@app/common';
import { ApiKeysService } from './api-keys.service';
import { AuthErrorCode, AuthException } from './auth.exception';
import { KeyRepository } from './key.repository';
import { generateKey, generateKeyId, hashKey, keyHint, NewKeyRecord } from './key.types';
import { PostgresKeyRepository } from './postgres-key.repository';
import { SqliteKeyRepository } from './sqlite-key.repository';

/** The real PostgreSQL of the CI machine; each run works in its own schema and drops it. */
const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

interface Backend {
  readonly name: string;
  /** A fresh, empty store. */
  open(): Promise<KeyRepository>;
  /** Every stored cell as text, read behind the repository's back. */
  dump(): Promise<string>;
  /** Runs SQL on the current store behind the repository's back; `%s.` is the schema prefix (none in SQLite). */
  sql(statement: string): Promise<void>;
  cleanup(): Promise<void>;
}

function sqliteBackend(): Backend {
  const dir = mkdtempSync(join(tmpdir(), 'keys-contract-'));
  let n = 0;
  let file = '';
  const opened: KeyRepository[] = [];
  return {
    name: 'SQLite',
    async open() {
      file = join(dir, `keys-${n++}.db`);
      const repo = new SqliteKeyRepository(file);
      opened.push(repo);
      return repo;
    },
    async dump() {
      const db = new Database(file, { readonly: true });
      try {
        const rows = db.prepare('SELECT * FROM api_keys').all();
        // The raw bytes too: the WAL and any free page must not hold a secret either.
        const raw = readdirSync(dir).filter((f) => f.startsWith(file.split('/').pop() as string)).map((f) => readFileSync(join(dir, f)).toString('latin1'));
        return JSON.stringify(rows) + raw.join('');
      } finally {
        db.close();
      }
    },
    async sql(statement) {
      const db = new Database(file);
      try {
        db.exec(statement.replaceAll('%s.', ''));
      } finally {
        db.close();
      }
    },
    async cleanup() {
      await Promise.all(opened.map((r) => r.close()));
    },
  };
}

function postgresBackend(): Backend {
  const schemas: string[] = [];
  const opened: KeyRepository[] = [];
  return {
    name: 'PostgreSQL',
    async open() {
      const schema = `keys_contract_${randomBytes(6).toString('hex')}`;
      schemas.push(schema);
      const repo = new PostgresKeyRepository({ connectionString: PG_URL, schema });
      opened.push(repo);
      return repo;
    },
    async dump() {
      const c = new Client({ connectionString: PG_URL });
      await c.connect();
      try {
        const { rows } = await c.query(`SELECT * FROM "${schemas.at(-1)}".api_keys`);
        return JSON.stringify(rows);
      } finally {
        await c.end();
      }
    },
    async sql(statement) {
      const c = new Client({ connectionString: PG_URL });
      await c.connect();
      try {
        await c.query(statement.replaceAll('%s.', `"${schemas.at(-1)}".`));
      } finally {
        await c.end();
      }
    },
    async cleanup() {
      await Promise.all(opened.map((r) => r.close()));
      const c = new Client({ connectionString: PG_URL });
      await c.connect();
      try {
        for (const s of schemas) await c.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
      } finally {
        await c.end();
      }
    },
  };
}

function newKey(overrides: Partial<NewKeyRecord> = {}): { key: string; record: NewKeyRecord } {
  const key = generateKey();
  return {
    key,
    record: {
      id: generateKeyId(),
      name: `k-${randomBytes(4).toString('hex')}`,
      hash: hashKey(key),
      hint: keyHint(key),
      scopes: ['generate'],
      limits: { rpm: 60, tpm: 1000, concurrency: 2 },
      budget: { day: 0, month: 0 },
      models: null,
      modelLimits: {},
      priority: 'normal',
      createdAt: new Date(Math.floor(Date.now() / 1000) * 1000),
      expiresAt: null,
      ...overrides,
    },
  };
}

beforeAll(() => Logger.overrideLogger(false));

describe.each([sqliteBackend, postgresBackend])('key store contract: %p', (makeBackend) => {
  const backend = makeBackend();
  let repo: KeyRepository;

  beforeEach(async () => {
    repo = await backend.open();
    await repo.migrate();
  });
  afterAll(() => backend.cleanup());

  it(`(${backend.name}) stores a key and finds it by hash, id and name with every field intact`, async () => {
    const { record } = newKey({
      scopes: ['generate', 'admin'],
      limits: { rpm: 7, tpm: 0, concurrency: 3 },
      budget: { day: 5000, month: 4_000_000_000 },
      models: ['chat-small', 'org/embed:v1.5'],
      modelLimits: { 'chat-small': { rpm: 30, tpm: 0 }, 'org/embed:v1.5': { rpm: 0, tpm: 9000 } },
      priority: 'high',
      expiresAt: new Date('2031-05-01T12:00:00.000Z'),
    });
    await repo.insert(record);
    const expected = { ...record, lastUsedAt: null, revokedAt: null };
    expect(await repo.findByHash(record.hash)).toEqual(expected);
    expect(await repo.findById(record.id)).toEqual(expected);
    expect(await repo.findByName(record.name)).toEqual(expected);
    expect(await repo.findByHash(hashKey('sk-llm-unknown'))).toBeNull();
    expect(await repo.findById('key_0000000000000000')).toBeNull();
    expect(await repo.findByName('nobody')).toBeNull();
  });

  it(`(${backend.name}) never holds the plaintext key`, async () => {
    const { key, record } = newKey();
    await repo.insert(record);
    const dump = await backend.dump();
    expect(dump).toContain(record.hash);
    expect(dump).not.toContain(key);
    expect(dump).not.toContain(key.slice('sk-llm-'.length));
  });

  it(`(${backend.name}) keeps names unique among unrevoked keys, and reusable after a revoke`, async () => {
    const first = newKey({ name: 'team-a' }).record;
    await repo.insert(first);
    await expect(repo.insert(newKey({ name: 'team-a' }).record)).rejects.toMatchObject({ code: AuthErrorCode.KeyNameTaken });
    expect(await repo.revoke(first.id, new Date())).toBe(true);
    const second = newKey({ name: 'team-a', createdAt: new Date(first.createdAt.getTime() + 1000) }).record;
    await repo.insert(second);
    expect((await repo.findByName('team-a'))?.id).toBe(second.id);
    await repo.revoke(second.id, new Date());
    // No unrevoked key left: the latest revoked one answers.
    expect((await repo.findByName('team-a'))?.id).toBe(second.id);
  });

  it(`(${backend.name}) revokes once, and a revoked key cannot be rotated`, async () => {
    const { record } = newKey();
    await repo.insert(record);
    const at = new Date(Math.floor(Date.now() / 1000) * 1000);
    expect(await repo.revoke(record.id, at)).toBe(true);
    expect(await repo.revoke(record.id, new Date())).toBe(false);
    expect((await repo.findById(record.id))?.revokedAt).toEqual(at);
    expect(await repo.replaceSecret(record.id, hashKey(generateKey()), 'x')).toBe(false);
    expect(await repo.revoke('key_ffffffffffffffff', new Date())).toBe(false);
  });

  it(`(${backend.name}) rotation swaps the hash: the old secret no longer matches`, async () => {
    const { record } = newKey();
    await repo.insert(record);
    const next = generateKey();
    expect(await repo.replaceSecret(record.id, hashKey(next), keyHint(next))).toBe(true);
    expect(await repo.findByHash(record.hash)).toBeNull();
    expect(await repo.findByHash(hashKey(next))).toMatchObject({ id: record.id, name: record.name, hint: keyHint(next) });
  });

  it(`(${backend.name}) updates limits, budgets, scopes, priority and expiry of an unrevoked key only`, async () => {
    const { record } = newKey();
    await repo.insert(record);
    const expires = new Date('2032-01-01T00:00:00.000Z');
    expect(await repo.update(record.id, { limits: { tpm: 0 }, budget: { month: 123_456 }, scopes: ['generate', 'admin'], priority: 'low', expiresAt: expires })).toBe(true);
    expect(await repo.findById(record.id)).toMatchObject({
      limits: { rpm: 60, tpm: 0, concurrency: 2 },
      budget: { day: 0, month: 123_456 },
      scopes: ['generate', 'admin'],
      priority: 'low',
      expiresAt: expires,
    });
    expect(await repo.update(record.id, { models: ['a', 'b'], modelLimits: { a: { rpm: 5, tpm: 50 } } })).toBe(true);
    expect(await repo.findById(record.id)).toMatchObject({ models: ['a', 'b'], modelLimits: { a: { rpm: 5, tpm: 50 } }, priority: 'low' });
    expect(await repo.update(record.id, { models: null, modelLimits: {} })).toBe(true);
    expect(await repo.findById(record.id)).toMatchObject({ models: null, modelLimits: {} });
    expect(await repo.update(record.id, {})).toBe(true);
    expect(await repo.update(record.id, { expiresAt: null })).toBe(true);
    expect((await repo.findById(record.id))?.expiresAt).toBeNull();
    await repo.revoke(record.id, new Date());
    expect(await repo.update(record.id, { budget: { day: 1 } })).toBe(false);
    expect(await repo.update('key_0000000000000000', { budget: { day: 1 } })).toBe(false);
  });

  it(`(${backend.name}) batches last-used times and never moves them backwards`, async () => {
    const a = newKey().record;
    const b = newKey().record;
    await repo.insert(a);
    await repo.insert(b);
    const t1 = new Date('2030-01-01T00:00:00.000Z');
    const t0 = new Date('2029-01-01T00:00:00.000Z');
    await repo.touch(new Map([[a.id, t1], [b.id, t0], ['key_0000000000000000', t1]]));
    await repo.touch(new Map([[a.id, t0]]));
    expect((await repo.findById(a.id))?.lastUsedAt).toEqual(t1);
    expect((await repo.findById(b.id))?.lastUsedAt).toEqual(t0);
    await repo.touch(new Map());
  });

  it(`(${backend.name}) lists every key oldest first`, async () => {
    const base = Date.now() - 10_000;
    const keys = [0, 1, 2].map((i) => newKey({ createdAt: new Date(base + i * 1000) }).record);
    for (const k of [keys[2], keys[0], keys[1]]) await repo.insert(k);
    await repo.revoke(keys[1].id, new Date());
    expect((await repo.list()).map((k) => k.id)).toEqual(keys.map((k) => k.id));
  });

  it(`(${backend.name}) migrations are idempotent and safe to run concurrently`, async () => {
    const { record } = newKey();
    await repo.insert(record);
    await Promise.all([repo.migrate(), repo.migrate()]);
    expect(await repo.findById(record.id)).not.toBeNull();
  });

  it(`(${backend.name}) through ApiKeysService: create, resolve by id or name, rotate, revoke`, async () => {
    const service = new ApiKeysService(repo, AppConfig.fromEnv({ KEY_DEFAULT_RPM: '42', KEY_DEFAULT_TPM: '0', KEY_DEFAULT_CONCURRENCY: '5' }));
    const created = await service.create({ name: 'svc', tpm: 900, scopes: ['admin'], priority: 'low', budgetMonth: 10_000 });
    expect(created.key).toMatch(/^sk-llm-[\w-]{32}$/);
    expect(created.record).toMatchObject({ name: 'svc', scopes: ['admin'], priority: 'low', limits: { rpm: 42, tpm: 900, concurrency: 5 }, budget: { day: 0, month: 10_000 } });
    const updated = await service.update('svc', { budgetDay: 500, rpm: 0 });
    expect(updated).toMatchObject({ limits: { rpm: 0, tpm: 900, concurrency: 5 }, budget: { day: 500, month: 10_000 } });
    await expect(service.update('svc', { budgetDay: -1 })).rejects.toMatchObject({ code: AuthErrorCode.InvalidKeyOptions });
    expect((await service.resolve('svc')).id).toBe(created.record.id);
    expect((await service.resolve(created.record.id)).name).toBe('svc');
    const rotated = await service.rotate('svc');
    expect(rotated.record.id).toBe(created.record.id);
    expect(rotated.key).not.toBe(created.key);
    expect(await repo.findByHash(hashKey(created.key))).toBeNull();
    expect((await service.revoke(created.record.id)).alreadyRevoked).toBe(false);
    expect((await service.revoke('svc')).alreadyRevoked).toBe(true);
    await expect(service.rotate('svc')).rejects.toMatchObject({ code: AuthErrorCode.KeyNotFound });
    await expect(service.resolve('nope')).rejects.toBeInstanceOf(AuthException);
    await expect(service.create({ name: 'key_0123456789abcdef' })).rejects.toMatchObject({ code: AuthErrorCode.InvalidKeyOptions });
    await expect(service.create({ name: 'has space' })).rejects.toMatchObject({ code: AuthErrorCode.InvalidKeyOptions });
  });

  it(`(${backend.name}) through ApiKeysService: models a key may use and its per-model limits (merged on update, 0 removes)`, async () => {
    const service = new ApiKeysService(repo, AppConfig.fromEnv({}));
    const created = await service.create({ name: 'scoped', models: ['chat', 'embed', 'chat'], modelRpm: { chat: 10 }, modelTpm: { chat: 500, embed: 2000 } });
    expect(created.record).toMatchObject({ models: ['chat', 'embed'], modelLimits: { chat: { rpm: 10, tpm: 500 }, embed: { rpm: 0, tpm: 2000 } } });
    const updated = await service.update('scoped', { modelRpm: { embed: 7 }, modelTpm: { chat: 0 } });
    expect(updated.modelLimits).toEqual({ chat: { rpm: 10, tpm: 0 }, embed: { rpm: 7, tpm: 2000 } });
    expect(updated.models).toEqual(['chat', 'embed']);
    const all = await service.update('scoped', { models: null, modelRpm: { chat: 0 } });
    expect(all).toMatchObject({ models: null, modelLimits: { embed: { rpm: 7, tpm: 2000 } } });
    await expect(service.create({ name: 'bad-model', models: ['has space'] })).rejects.toMatchObject({ code: AuthErrorCode.InvalidKeyOptions });
  });

  it(`(${backend.name}) a store made before per-model access is migrated: its keys may use every model`, async () => {
    // The store as the previous release left it: no models columns, schema version 2, one key.
    await backend.sql('ALTER TABLE %s.api_keys DROP COLUMN models; ALTER TABLE %s.api_keys DROP COLUMN model_limits; DELETE FROM %s.schema_migrations WHERE version = 3;');
    await backend.sql(
      `INSERT INTO %s.api_keys (id, name, key_hash, key_hint, scopes, rpm, tpm, concurrency, priority, created_at) ` +
        `VALUES ('key_00000000000000aa', 'old', 'h-old', 'sk-llm-old…', 'generate', 1, 2, 3, 'normal', ${backend.name === 'SQLite' ? Date.now() : 'now()'})`,
    );
    await repo.migrate();
    expect(await repo.findById('key_00000000000000aa')).toMatchObject({ name: 'old', models: null, modelLimits: {}, limits: { rpm: 1, tpm: 2, concurrency: 3 } });
    const { record } = newKey({ models: ['x'] });
    await repo.insert(record);
    expect((await repo.findById(record.id))?.models).toEqual(['x']);
  });
});
