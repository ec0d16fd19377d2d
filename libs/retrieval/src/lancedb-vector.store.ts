import type { Connection, Table, VectorQuery } from '@lancedb/lancedb';
import { Field, FixedSizeList, Float32, Int32, List, Schema, Utf8 } from 'apache-arrow';
import { RetrievalErrorCode, RetrievalException } from './retrieval.exception';
import { chmodSync, mkdirSync } from 'node:fs';
import type { CollectionInfo, CollectionOwnership, Metadata, SearchHit, SearchOptions, VectorRecord, VectorStore } from './retrieval.types';

/** Schema metadata keys that record a collection's ownership. */
const OWNER = 'llm.owner';
const SHARED = 'llm.shared';

/** A local database folder (not an object-store URI). */
function isLocal(uri: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:\/\//i.test(uri);
}

/**
 * Creates a local folder readable by this user only (0700) and tightens an existing one that this
 * user owns: document chunks are nobody else's business on a shared machine.
 */
export function ensurePrivateDir(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  try {
    chmodSync(path, 0o700);
  } catch {
    /* not ours to change (a mounted volume): left as the operator made it */
  }
}

/** The metadata key that filters on the document id (a column, not a metadata entry). */
export const DOCUMENT_ID_FILTER = 'document_id';

/**
 * Collections as LanceDB tables (one per collection) in the database at `uri`: a local folder
 * (each table a `<name>.lance` folder) or an object-store URI (`s3://…`, `gs://…`, `az://…`).
 * Search is exact (flat) cosine similarity, which is right for the collection sizes a single
 * server ingests; metadata filters are pushed down to LanceDB as SQL predicates.
 */
export class LanceDbVectorStore implements VectorStore {
  #connection: Promise<Connection> | null = null;
  readonly #tables = new Map<string, Promise<Table>>();
  /** LanceDB commits are optimistic; writes to one table are queued to avoid retries and conflicts. */
  readonly #writes = new Map<string, Promise<unknown>>();

  constructor(private readonly uri: string) {}

  async listCollections(): Promise<CollectionInfo[]> {
    const db = await this.#db();
    const names = (await db.tableNames()).sort();
    const infos = await Promise.all(names.map((n) => this.getCollection(n)));
    return infos.filter((i): i is CollectionInfo => i !== null);
  }

  async getCollection(name: string): Promise<CollectionInfo | null> {
    const table = await this.#table(name);
    if (!table) return null;
    const schema = await table.schema();
    const vector = schema.fields.find((f) => f.name === 'vector')?.type as FixedSizeList | undefined;
    return {
      name,
      dimension: vector?.listSize ?? 0,
      chunks: await table.countRows(),
      owner: schema.metadata.get(OWNER) ?? null,
      shared: schema.metadata.get(SHARED) === 'true',
    };
  }

  async createCollection(name: string, dimension: number, ownership: CollectionOwnership): Promise<CollectionInfo> {
    const db = await this.#db();
    const schema = new Schema([
      new Field('id', new Utf8(), false),
      new Field('document_id', new Utf8(), false),
      new Field('chunk_index', new Int32(), false),
      new Field('text', new Utf8(), false),
      new Field('metadata', new Utf8(), false),
      // `key=<JSON value>` per metadata entry: equality filters become array_has_all().
      new Field('tags', new List(new Field('item', new Utf8(), true)), false),
      new Field('vector', new FixedSizeList(dimension, new Field('item', new Float32(), true)), false),
    ], new Map([[OWNER, ownership.owner], [SHARED, String(ownership.shared)]]));
    try {
      const table = await db.createEmptyTable(name, schema, { existOk: false });
      this.#tables.set(name, Promise.resolve(table));
    } catch (err) {
      if (/already exists/i.test(String(err))) {
        throw new RetrievalException(RetrievalErrorCode.CollectionExists, `The collection '${name}' already exists`, { param: 'name' });
      }
      throw err;
    }
    return { name, dimension, chunks: 0, owner: ownership.owner, shared: ownership.shared };
  }

  async dropCollection(name: string): Promise<boolean> {
    const db = await this.#db();
    return this.#serial(name, async () => {
      const cached = this.#tables.get(name);
      this.#tables.delete(name);
      (await cached?.catch(() => null))?.close();
      if (!(await db.tableNames()).includes(name)) return false;
      await db.dropTable(name);
      return true;
    });
  }

  async upsert(name: string, records: readonly VectorRecord[]): Promise<void> {
    if (records.length === 0) return;
    const table = await this.#require(name);
    const { dimension } = (await this.getCollection(name)) as CollectionInfo;
    const bad = records.find((r) => r.vector.length !== dimension);
    if (bad) {
      throw new RetrievalException(
        RetrievalErrorCode.DimensionMismatch,
        `The collection '${name}' holds vectors of ${dimension} dimensions; got ${bad.vector.length}`,
      );
    }
    const rows = records.map((r) => ({
      id: r.id,
      document_id: r.documentId,
      chunk_index: r.chunkIndex,
      text: r.text,
      metadata: JSON.stringify(r.metadata),
      tags: tagsOf(r.metadata),
      vector: Array.from(r.vector),
    }));
    await this.#serial(name, () => table.mergeInsert('id').whenMatchedUpdateAll().whenNotMatchedInsertAll().execute(rows));
  }

  async deleteDocument(name: string, documentId: string): Promise<number> {
    const table = await this.#require(name);
    return this.#serial(name, async () => {
      const before = await table.countRows();
      await table.delete(`document_id = ${sqlString(documentId)}`);
      return before - (await table.countRows());
    });
  }

  async search(name: string, vector: Float32Array, options: SearchOptions): Promise<SearchHit[]> {
    const table = await this.#require(name);
    let query = (table.search(vector) as VectorQuery).distanceType('cosine').limit(options.topK);
    const where = whereOf(options.filter);
    // Prefilter: the filter narrows the candidates before the top_k cut, so top_k matches come back.
    if (where) query = query.where(where);
    const rows = (await query.toArray()) as LanceRow[];
    const min = options.minScore ?? -1;
    return rows
      .map((row) => ({
        id: row.id,
        documentId: row.document_id,
        chunkIndex: row.chunk_index,
        text: row.text,
        // LanceDB's cosine distance is 1 - cos.
        score: 1 - row._distance,
        metadata: JSON.parse(row.metadata) as Metadata,
      }))
      .filter((hit) => hit.score >= min);
  }

  async close(): Promise<void> {
    for (const table of this.#tables.values()) (await table.catch(() => null))?.close();
    this.#tables.clear();
    (await this.#connection?.catch(() => null))?.close();
    this.#connection = null;
  }

  #db(): Promise<Connection> {
    this.#connection ??= (async () => {
      const { connect } = await import('@lancedb/lancedb');
      if (isLocal(this.uri)) ensurePrivateDir(this.uri);
      return connect(this.uri);
    })().catch((err: unknown) => {
      this.#connection = null;
      throw new RetrievalException(RetrievalErrorCode.StoreUnavailable, `Vector store unreachable: ${String(err)}`, { cause: err });
    });
    return this.#connection;
  }

  async #table(name: string): Promise<Table | null> {
    const cached = this.#tables.get(name);
    if (cached) return cached;
    const db = await this.#db();
    if (!(await db.tableNames()).includes(name)) return null;
    const opening = db.openTable(name);
    this.#tables.set(name, opening);
    opening.catch(() => this.#tables.delete(name));
    return opening;
  }

  async #require(name: string): Promise<Table> {
    const table = await this.#table(name);
    if (!table) throw notFound(name);
    return table;
  }

  #serial<T>(name: string, task: () => Promise<T>): Promise<T> {
    const previous = this.#writes.get(name) ?? Promise.resolve();
    const next = previous.then(task, task);
    this.#writes.set(name, next.catch(() => undefined));
    return next;
  }
}

interface LanceRow {
  id: string;
  document_id: string;
  chunk_index: number;
  text: string;
  metadata: string;
  _distance: number;
}

export function notFound(name: string): RetrievalException {
  return new RetrievalException(RetrievalErrorCode.CollectionNotFound, `The collection '${name}' does not exist`);
}

function tagsOf(metadata: Metadata): string[] {
  return Object.entries(metadata).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
}

function sqlString(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** `{document_id, …metadata}` equality filter as a LanceDB SQL predicate. */
function whereOf(filter: Metadata | undefined): string | undefined {
  if (!filter) return undefined;
  const parts: string[] = [];
  const tags: string[] = [];
  for (const [key, value] of Object.entries(filter)) {
    if (key === DOCUMENT_ID_FILTER) parts.push(`document_id = ${sqlString(String(value))}`);
    else tags.push(sqlString(`${key}=${JSON.stringify(value)}`));
  }
  if (tags.length > 0) parts.push(`array_has_all(tags, [${tags.join(', ')}])`);
  return parts.length > 0 ? parts.join(' AND ') : undefined;
}
