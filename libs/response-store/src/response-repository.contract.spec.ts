import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@nestjs/common';
import { Client } from 'pg';
import { AppConfig } from '@app/common';
import { PostgresResponseRepository } from './postgres-response.repository';
import { ResponseRepository } from './response.repository';
import { ResponseStoreService } from './response-store.service';
import { StoredResponse } from './response-store.types';
import { SqliteResponseRepository } from './sqlite-response.repository';

/** The real PostgreSQL of the CI machine; each run works in its own schema and drops it. */
const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

interface Backend {
  readonly name: string;
  /** A fresh, empty store. */
  open(): Promise<ResponseRepository>;
  cleanup(): Promise<void>;
}

function sqliteBackend(): Backend {
  const dir = mkdtempSync(join(tmpdir(), 'responses-contract-'));
  let n = 0;
  const opened: ResponseRepository[] = [];
  return {
    name: 'SQLite',
    async open() {
      const repo = new SqliteResponseRepository(join(dir, `keys-${n++}.db`));
      opened.push(repo);
      return repo;
    },
    async cleanup() {
      await Promise.all(opened.map((r) => r.close()));
    },
  };
}

function postgresBackend(): Backend {
  const schemas: string[] = [];
  const opened: ResponseRepository[] = [];
  return {
    name: 'PostgreSQL',
    async open() {
      const schema = `responses_contract_${randomBytes(6).toString('hex')}`;
      schemas.push(schema);
      const repo = new PostgresResponseRepository({ connectionString: PG_URL, schema });
      opened.push(repo);
      return repo;
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

const NOW = Date.parse('2030-06-01T12:00:00.000Z');

function stored(overrides: Partial<StoredResponse> = {}): StoredResponse {
  const id = `resp_${randomBytes(16).toString('hex')}`;
  return {
    id,
    keyId: 'key_0123456789abcdef',
    createdAt: NOW,
    expiresAt: NOW + 60_000,
    previousId: null,
    input: [{ type: 'message', id: `msg_${id.slice(5)}_i0`, role: 'user', content: [{ type: 'input_text', text: 'héllo \u0000 "quoted" 🙂' }] }],
    context: [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'earlier' }] }],
    response: { id, object: 'response', status: 'completed', output: [{ type: 'message', content: [{ type: 'output_text', text: 'ok', annotations: [] }] }], usage: { input_tokens: 3, output_tokens: 1 }, metadata: {} },
    ...overrides,
  };
}

beforeAll(() => Logger.overrideLogger(false));

describe.each([sqliteBackend, postgresBackend])('stored responses contract: %p', (makeBackend) => {
  const backend = makeBackend();
  let repo: ResponseRepository;

  beforeEach(async () => {
    repo = await backend.open();
    await repo.ready();
  });
  afterAll(() => backend.cleanup());

  it(`(${backend.name}) stores a response and gives it back intact (NUL characters, emoji, nested JSON)`, async () => {
    const r = stored({ previousId: 'resp_0123' });
    await repo.insert(r);
    expect(await repo.find(r.id, r.keyId, NOW)).toEqual(r);
  });

  it(`(${backend.name}) a response is only visible to the key that made it`, async () => {
    const r = stored();
    await repo.insert(r);
    expect(await repo.find(r.id, 'key_ffffffffffffffff', NOW)).toBeNull();
    expect(await repo.delete(r.id, 'key_ffffffffffffffff', NOW)).toBe(false);
    expect(await repo.find(r.id, r.keyId, NOW)).not.toBeNull();
  });

  it(`(${backend.name}) an expired response is gone for reads and deletes, and pruning removes it`, async () => {
    const old = stored({ expiresAt: NOW - 1 });
    const fresh = stored();
    await repo.insert(old);
    await repo.insert(fresh);
    expect(await repo.find(old.id, old.keyId, NOW)).toBeNull();
    expect(await repo.delete(old.id, old.keyId, NOW)).toBe(false);
    expect(await repo.prune(NOW)).toBe(1);
    expect(await repo.prune(NOW)).toBe(0);
    expect(await repo.find(fresh.id, fresh.keyId, NOW)).not.toBeNull();
    // Expiry is exclusive: at expiresAt it is gone.
    expect(await repo.find(fresh.id, fresh.keyId, fresh.expiresAt)).toBeNull();
  });

  it(`(${backend.name}) deletes once`, async () => {
    const r = stored();
    await repo.insert(r);
    expect(await repo.delete(r.id, r.keyId, NOW)).toBe(true);
    expect(await repo.delete(r.id, r.keyId, NOW)).toBe(false);
    expect(await repo.find(r.id, r.keyId, NOW)).toBeNull();
  });

  it(`(${backend.name}) an id is stored once`, async () => {
    const r = stored();
    await repo.insert(r);
    await expect(repo.insert(r)).rejects.toBeDefined();
  });

  it(`(${backend.name}) migrations are idempotent and safe to run concurrently`, async () => {
    const r = stored();
    await repo.insert(r);
    await Promise.all([repo.migrate(), repo.migrate()]);
    expect(await repo.find(r.id, r.keyId, NOW)).not.toBeNull();
  });

  it(`(${backend.name}) through ResponseStoreService: expiry is RESPONSES_RETENTION_SECONDS after creation`, async () => {
    const service = new ResponseStoreService(repo, AppConfig.fromEnv({ RESPONSES_RETENTION_SECONDS: '60' }));
    const { createdAt: _c, expiresAt: _e, ...r } = stored();
    const now = Date.now();
    await service.save(r, now);
    const found = await service.find(r.id, r.keyId);
    expect(found).toMatchObject({ id: r.id, createdAt: now, expiresAt: now + 60_000 });
    const expired = { ...stored(), id: `resp_${randomBytes(16).toString('hex')}` };
    await service.save(expired, now - 61_000);
    expect(await service.find(expired.id, expired.keyId)).toBeNull();
    expect(await service.prune()).toBeGreaterThanOrEqual(1);
    expect(await service.delete(r.id, r.keyId)).toBe(true);
  });
});
