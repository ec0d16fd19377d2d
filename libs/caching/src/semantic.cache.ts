import type { Redis } from 'ioredis';
import { redisKeys } from './cache.redis';
import type { CachedCompletion } from './caching.types';
import { IndexMatch, SemanticIndex } from './semantic.index';

/** Options of {@link SemanticCache}. */
export interface SemanticCacheOptions {
  /** Cosine similarity at or above which a stored answer is reused (default 0.95). */
  readonly threshold: number;
  /** Most entries held; the least recently used goes first (default 1,000). */
  readonly maxEntries: number;
  /** Lifetime of an entry in ms. */
  readonly ttlMs: number;
  /** Shared Redis (null: this process only) and the key namespace in it. */
  readonly redis: Redis | null;
  readonly namespace: string;
  /** Called when Redis fails; the cache goes on with what this process holds. */
  readonly onRedisError?: (operation: string, error: unknown) => void;
}

interface LogEntry {
  id: string;
  scope: string;
  vec: string;
  rec: CachedCompletion;
  exp: number;
}

/** The replay reads the log in pages of this many entries. */
const PAGE = 1000;

/**
 * The semantic cache: an in-process {@link SemanticIndex} (lookups never leave the process), kept
 * in step with the other replicas through Redis when one is configured. Every entry is appended to
 * a Redis stream (trimmed to about `maxEntries`); before a lookup each replica reads what was
 * appended since its last read (one round trip), so an answer stored by one replica is a hit on
 * every other. A flush bumps an epoch key that every replica checks on the same round trip.
 * Without Redis, or while it is down, the process's own entries keep serving.
 */
export class SemanticCache {
  #index: SemanticIndex<CachedCompletion> | null = null;
  #lastId: string | null = null;
  #epoch: string | null = null;
  #syncing: Promise<void> | null = null;
  #dimensionMismatch = 0;
  readonly #keys: ReturnType<typeof redisKeys>;

  constructor(readonly options: SemanticCacheOptions) {
    this.#keys = redisKeys(options.namespace);
  }

  get size(): number {
    return this.#index?.size ?? 0;
  }

  get evictions(): number {
    return this.#index?.evictions ?? 0;
  }

  /**
   * The best match of `scope` for `vector` (after reading the other replicas' new entries), or
   * null when the scope is empty. `hit` says whether it reaches the threshold; a hit counts as a
   * use for the LRU.
   */
  async lookup(scope: string, vector: Float32Array): Promise<{ match: IndexMatch<CachedCompletion>; hit: boolean } | null> {
    await this.#syncQuietly();
    const match = this.#index?.search(scope, vector) ?? null;
    if (!match) return null;
    const hit = match.similarity >= this.options.threshold;
    if (hit) this.#index?.touch(match.id);
    return { match, hit };
  }

  /** Stores an answer here and, with Redis, for every replica. */
  async store(id: string, scope: string, vector: Float32Array, record: CachedCompletion): Promise<void> {
    // Learn the flush epoch before adding anything, so that a later flush is recognised as one.
    await this.#syncQuietly();
    const exp = Date.now() + this.options.ttlMs;
    const index = this.#ensureIndex(vector.length);
    if (!index || !index.insert(id, scope, vector, record, exp)) return;
    const { redis } = this.options;
    if (!redis) return;
    const entry: LogEntry = { id, scope, vec: Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64'), rec: record, exp };
    try {
      await redis
        .multi()
        .xadd(this.#keys.semanticLog, 'MAXLEN', '~', String(this.options.maxEntries), '*', 'e', JSON.stringify(entry))
        .pexpire(this.#keys.semanticLog, this.options.ttlMs)
        .exec();
    } catch (err) {
      this.options.onRedisError?.('write', err);
    }
  }

  /** Drops every entry, here and (with Redis) for every replica. */
  async flush(): Promise<void> {
    this.#index?.clear();
    this.#lastId = null;
    const { redis } = this.options;
    if (!redis) return;
    const results = await redis.multi().incr(this.#keys.semanticEpoch).del(this.#keys.semanticLog).exec();
    const epoch = results?.[0]?.[1];
    if (epoch !== undefined && epoch !== null) this.#epoch = String(epoch);
  }

  /** Reads the entries other replicas appended; a Redis failure is reported and ignored. */
  async #syncQuietly(): Promise<void> {
    if (!this.options.redis) return;
    // Concurrent lookups share one read.
    this.#syncing ??= this.#sync().finally(() => (this.#syncing = null));
    try {
      await this.#syncing;
    } catch (err) {
      this.options.onRedisError?.('sync', err);
    }
  }

  async #sync(): Promise<void> {
    const redis = this.options.redis as Redis;
    for (;;) {
      const start = this.#lastId === null ? '-' : `(${this.#lastId}`;
      const results = await redis
        .multi()
        .get(this.#keys.semanticEpoch)
        .xrange(this.#keys.semanticLog, start, '+', 'COUNT', PAGE)
        .exec();
      if (!results) throw new Error('semantic cache sync was aborted');
      for (const [err] of results) if (err) throw err;
      const epoch = (results[0][1] as string | null) ?? '0';
      if (this.#epoch !== epoch) {
        // First read, or another replica flushed: start over from the log. (Entries stored while
        // Redis was unreachable since start are kept on the first read: they are valid answers.)
        const first = this.#epoch === null;
        this.#epoch = epoch;
        if (!first) {
          this.#index?.clear();
          this.#lastId = null;
          continue;
        }
      }
      const page = results[1][1] as [string, string[]][];
      const now = Date.now();
      for (const [streamId, fields] of page) {
        this.#lastId = streamId;
        const raw = fields[fields.indexOf('e') + 1];
        let entry: LogEntry;
        try {
          entry = JSON.parse(raw) as LogEntry;
        } catch {
          continue;
        }
        if (entry.exp <= now || this.#index?.has(entry.id)) continue;
        const bytes = Buffer.from(entry.vec, 'base64');
        const vector = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
        const index = this.#ensureIndex(vector.length);
        if (index) index.insert(entry.id, entry.scope, vector, entry.rec, entry.exp);
      }
      if (page.length < PAGE) return;
    }
  }

  #ensureIndex(dimension: number): SemanticIndex<CachedCompletion> | null {
    this.#index ??= new SemanticIndex<CachedCompletion>(dimension, this.options.maxEntries);
    if (this.#index.dimension !== dimension) {
      // Another embedding model wrote into this namespace; its scopes can never match ours anyway.
      this.#dimensionMismatch++;
      return null;
    }
    return this.#index;
  }
}
