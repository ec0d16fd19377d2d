import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LanceDbVectorStore } from './lancedb-vector.store';
import { RetrievalErrorCode } from './retrieval.exception';
import type { CollectionOwnership, VectorRecord } from './retrieval.types';

const OWN: CollectionOwnership = { owner: 'key_0123456789abcdef', shared: false };

/** The real LanceDB on a temporary folder, with vectors chosen by hand. */
describe('LanceDbVectorStore', () => {
  let dir: string;
  let store: LanceDbVectorStore;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'lancedb-'));
    store = new LanceDbVectorStore(dir);
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const rec = (doc: string, i: number, vector: number[], text: string, metadata = {}): VectorRecord => ({
    id: `${doc}:${i}`,
    documentId: doc,
    chunkIndex: i,
    text,
    vector: Float32Array.from(vector),
    metadata,
  });

  const corpus = [
    rec('cats', 0, [1, 0, 0, 0], 'Cats purr and sleep in the sun.', { lang: 'en', topic: 'pets' }),
    rec('rockets', 0, [0, 1, 0, 0], 'Rockets burn fuel to reach orbit.', { lang: 'en', topic: 'space' }),
    rec('rockets', 1, [0, 0.8, 0.6, 0], 'Orbit needs about 7.8 km/s.', { lang: 'en', topic: 'space' }),
    rec('chats', 0, [0.9, 0, 0, 0.43589], 'Les chats ronronnent.', { lang: 'fr', topic: 'pets' }),
  ];

  it('returns the nearest chunk first by cosine similarity, with scores', async () => {
    await store.createCollection('kb', 4, OWN);
    await store.upsert('kb', corpus);
    // Scaled: cosine ignores length, so [0, 2, 0.1, 0] is closest to rockets:0.
    const hits = await store.search('kb', Float32Array.from([0, 2, 0.1, 0]), { topK: 3 });
    expect(hits.map((h) => h.id)).toEqual(['rockets:0', 'rockets:1', 'cats:0']);
    expect(hits[0].score).toBeCloseTo(2 / Math.sqrt(4.01), 4);
    expect(hits[0].text).toBe('Rockets burn fuel to reach orbit.');
    expect(hits[0].metadata).toEqual({ lang: 'en', topic: 'space' });
    expect((await store.getCollection('kb'))).toEqual({ name: 'kb', dimension: 4, chunks: 4, owner: 'key_0123456789abcdef', shared: false });
  });

  it('applies min_score and metadata filters before top_k', async () => {
    await store.createCollection('kb', 4, OWN);
    await store.upsert('kb', corpus);
    const q = Float32Array.from([1, 0, 0, 0]);
    expect((await store.search('kb', q, { topK: 4, minScore: 0.5 })).map((h) => h.id)).toEqual(['cats:0', 'chats:0']);
    expect((await store.search('kb', q, { topK: 1, filter: { lang: 'fr' } })).map((h) => h.id)).toEqual(['chats:0']);
    expect((await store.search('kb', q, { topK: 4, filter: { topic: 'space', document_id: 'rockets' } })).map((h) => h.id).sort()).toEqual([
      'rockets:0',
      'rockets:1',
    ]);
    expect(await store.search('kb', q, { topK: 4, filter: { lang: "it's" } })).toEqual([]);
  });

  it('replaces records with the same id and deletes a document', async () => {
    await store.createCollection('kb', 4, OWN);
    await store.upsert('kb', corpus);
    await store.upsert('kb', [rec('cats', 0, [1, 0, 0, 0], 'Cats nap.')]);
    expect((await store.getCollection('kb'))?.chunks).toBe(4);
    expect((await store.search('kb', Float32Array.from([1, 0, 0, 0]), { topK: 1 }))[0].text).toBe('Cats nap.');
    expect(await store.deleteDocument('kb', 'rockets')).toBe(2);
    expect((await store.getCollection('kb'))?.chunks).toBe(2);
  });

  it('keeps the owner and the shared flag with the collection, across a reopen', async () => {
    await store.createCollection('mine', 4, OWN);
    await store.createCollection('ours', 4, { owner: 'key_fedcba9876543210', shared: true });
    await store.close();
    const reopened = new LanceDbVectorStore(dir);
    expect((await reopened.listCollections()).map((c) => [c.name, c.owner, c.shared])).toEqual([
      ['mine', 'key_0123456789abcdef', false],
      ['ours', 'key_fedcba9876543210', true],
    ]);
    await reopened.close();
  });

  it('creates a local database folder readable by its user only (0700)', async () => {
    const fresh = join(dir, 'private', 'vectors');
    const s2 = new LanceDbVectorStore(fresh);
    await s2.createCollection('kb', 4, OWN);
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
    await s2.close();
  });

  it('refuses a taken name and a wrong dimension; dropping removes the data from disk', async () => {
    await store.createCollection('kb', 4, OWN);
    await expect(store.createCollection('kb', 4, OWN)).rejects.toMatchObject({ code: RetrievalErrorCode.CollectionExists });
    await expect(store.upsert('kb', [rec('x', 0, [1, 0], 'short')])).rejects.toMatchObject({ code: RetrievalErrorCode.DimensionMismatch });
    await store.upsert('kb', corpus);
    expect(existsSync(join(dir, 'kb.lance'))).toBe(true);
    expect((await store.listCollections()).map((c) => c.name)).toEqual(['kb']);
    expect(await store.dropCollection('kb')).toBe(true);
    expect(existsSync(join(dir, 'kb.lance'))).toBe(false);
    expect(await store.dropCollection('kb')).toBe(false);
    expect(await store.getCollection('kb')).toBeNull();
    await expect(store.search('kb', Float32Array.from([1, 0, 0, 0]), { topK: 1 })).rejects.toMatchObject({
      code: RetrievalErrorCode.CollectionNotFound,
    });
  });
});
