import { Inject, Injectable, Logger, OnModuleInit, Optional } from '@nestjs/common';
import type { CachingConfig } from './caching.config';
import { debugEnabled } from '@app/common';
import { CACHE_MANAGER } from '@nestjs/cache-manager';
import type { Cache } from 'cache-manager';
import { hash } from 'node:crypto';
import { statSync } from 'node:fs';
import { AppConfig } from '@app/common';
import { exactKey, isDeterministic, modelFingerprint, semanticScope } from './cache.keys';
import { countKeys, deleteKeys, redisKeys, cacheRedisNamespace } from './cache.redis';
import { CACHE_STORES } from './cache-store.module';
import type { CacheStores } from './cache-store.module';
import { CachingErrorCode, CachingException } from './caching.exception';
import { CACHE_OBSERVER, EMBEDDER, SIMILARITY_BUCKETS } from './caching.types';
import type {
  CacheableRequest,
  CachedCompletion,
  CachedRun,
  CacheDirectives,
  CacheLayer,
  CacheObserver,
  CacheStats,
  CacheStatus,
  CompletionEvent,
  Embedder,
  LayerCounters,
} from './caching.types';
import { SemanticCache } from './semantic.cache';

class CacheTimeout extends Error {
  constructor(operation: string, ms: number) {
    super(`${operation} took longer than ${ms} ms`);
  }
}

/** Only complete answers are stored: an aborted or failed generation is never replayed. */
const STORABLE_FINISH = new Set(['stop', 'length']);

function counters(): LayerCounters {
  return { hits: 0, misses: 0, writes: 0, errors: 0 };
}

/** How long a model file's modification time is trusted before it is read again, ms. */
const VERSION_RECHECK_MS = 1000;

/**
 * The one place that decides whether a request is answered from a cache, and that stores the
 * model's answers. Every generation endpoint hands it the resolved request and a way to run the
 * model; it returns the events to render (replayed or live) and the X-Cache headers.
 *
 * Order: exact cache (SHA-256 key), then the semantic cache (when enabled), then the model. Only
 * deterministic requests (temperature 0, or a fixed seed) take part unless CACHE_SAMPLED or
 * `X-Cache-Sampled: true` says otherwise. Any cache or embedding failure is logged (at most every
 * 10 s per kind), counted, and the request goes to the model: a cache never fails a request.
 */
@Injectable()
export class ResponseCacheService implements OnModuleInit {
  readonly #logger = new Logger('Cache');
  readonly #exact = counters();
  readonly #semanticCounters = counters();
  readonly #similarity = { count: 0, sum: 0, buckets: SIMILARITY_BUCKETS.map(() => 0) };
  #bypassed = 0;
  #model: string | null = null;
  #embeddingModel: string | null = null;
  readonly #fingerprints = new Map<string, Promise<string>>();
  /** The model files' modification times, read at most once a second (a stat a request was ~3% of its main-thread time). */
  readonly #versions = new Map<string, { version: string; at: number }>();
  readonly #semantic: SemanticCache | null;
  readonly #failedGets = new Set<string>();
  readonly #lastLog = new Map<string, { at: number; suppressed: number }>();

  constructor(
    @Inject(AppConfig) private readonly config: CachingConfig,
    @Inject(CACHE_MANAGER) private readonly cache: Cache,
    @Inject(CACHE_STORES) private readonly stores: CacheStores,
    @Optional() @Inject(EMBEDDER) private readonly embedder?: Embedder,
    @Optional() @Inject(CACHE_OBSERVER) private readonly observer?: CacheObserver,
  ) {
    this.#semantic =
      config.semanticCacheEnabled && embedder
        ? new SemanticCache({
            threshold: config.semanticCacheThreshold,
            maxEntries: config.semanticCacheMaxEntries,
            ttlMs: config.cacheTtlSeconds * 1000,
            redis: stores.redis,
            namespace: cacheRedisNamespace(config),
            onRedisError: (operation, err) => this.#fail('semantic', `redis ${operation}`, err),
          })
        : null;
    if (config.semanticCacheEnabled && !embedder) {
      this.#logger.warn('SEMANTIC_CACHE_ENABLED is set but no embedder is provided; the semantic cache is off');
    }
    // cache-manager reports a failed read as an event and answers undefined; remember which key
    // failed so that the lookup counts an error, not a miss.
    this.cache.on('get', (event: { key: string; error?: unknown }) => {
      if (event.error !== undefined) this.#failedGets.add(event.key);
    });
  }

  async onModuleInit(): Promise<void> {
    if (!this.config.cacheEnabled && !this.#semantic) return;
    try {
      this.#model = await this.#fingerprint(this.config.modelPath);
      this.#embeddingModel = await this.#fingerprint(this.embedder?.modelPath?.() ?? this.config.embeddingModelPath);
    } catch (err) {
      // The model load reports a missing file to the user; the caches just stay off.
      this.#logger.warn(`Caches off: cannot fingerprint the model (${(err as Error).message})`);
      this.#model = this.#embeddingModel = null;
    }
  }

  /** Fingerprints by file, computed once each (a model's file is read at its first request). */
  #fingerprint(path: string): Promise<string> {
    const now = performance.now();
    let seen = this.#versions.get(path);
    if (!seen || now - seen.at >= VERSION_RECHECK_MS) {
      let version = '';
      try {
        // A file replaced in place (pulled again) is another model.
        version = String(statSync(path).mtimeMs);
      } catch {
        /* missing: modelFingerprint rejects */
      }
      seen = { version, at: now };
      this.#versions.set(path, seen);
    }
    const version = seen.version;
    const key = `${path}\u0000${version}`;
    let found = this.#fingerprints.get(key);
    if (!found) {
      found = modelFingerprint(path);
      found.catch(() => this.#fingerprints.delete(key));
      this.#fingerprints.set(key, found);
    }
    return found;
  }

  /** Whether any cache can answer (X-Cache is only sent then). */
  get enabled(): boolean {
    return this.#model !== null && (this.config.cacheEnabled || this.#semantic !== null);
  }

  /**
   * Answers `request` from a cache when allowed and possible, else runs `generate` (the model) and
   * stores its complete answer unless told not to. Nothing is awaited on the model here: errors of
   * `generate` surface on the first `next()` of the events, as they would without a cache.
   */
  async run(request: CacheableRequest, directives: CacheDirectives, generate: () => AsyncIterable<CompletionEvent>): Promise<CachedRun> {
    if (!this.enabled) return { status: null, headers: {}, events: generate() };
    let model = this.#model as string;
    if (request.model !== undefined) {
      const file = await this.#fingerprint(request.model.path).catch(() => null);
      // A model file that cannot be read has no identity: answered by the model, not cached.
      if (file === null) return { status: null, headers: {}, events: generate() };
      model = `${file}:${request.model.id}`;
    }
    const cacheable = isDeterministic(request.sampling) || (directives.sampled ?? this.config.cacheSampled);
    if (!cacheable) {
      this.#bypassed++;
      if (debugEnabled()) this.#logger.debug('bypass: sampled request (temperature > 0 without a seed; CACHE_SAMPLED off)');
      return this.#miss(generate(), null);
    }
    // CACHE_SCOPE=key: a caller's requests only ever meet entries its own requests stored, so a hit
    // (or its Age) cannot tell one key what another asked, or when.
    const owner = this.config.cacheScope === 'key' ? `key:${directives.caller ?? 'anonymous'}` : '';
    const by = callerTag(directives.caller);
    const key = exactKey(request, model, owner);
    const scope = this.#semantic ? semanticScope(request, model, this.#embeddingModel as string, owner) : '';
    let vector: Float32Array | null | undefined;
    if (directives.noCache) {
      this.#bypassed++;
      if (debugEnabled()) this.#logger.debug('bypass: Cache-Control no-cache');
    } else {
      if (this.config.cacheEnabled) {
        const record = await this.#exactGet(key);
        if (record) return this.#hit('HIT', request, record, by);
      }
      if (this.#semantic) {
        vector = await this.#embed(request.text);
        const found = vector ? await this.#semanticLookup(scope, vector) : null;
        if (found) {
          // The very same request (entries are keyed by the exact key) whose exact entry is gone
          // (evicted, or Redis restarted empty): put it back, so the next one is an exact hit.
          if (found.id === key && this.config.cacheEnabled && !directives.noStore) this.#exactWrite(key, found.record);
          return this.#hit('SEMANTIC-HIT', request, found.record, by, found.similarity);
        }
      }
    }
    const store = directives.noStore ? null : (record: CachedCompletion) => this.#write(key, scope, request.text, vector, record);
    return this.#miss(generate(), store, by);
  }

  /** Counters kept since start (cheap: for metrics). */
  counters(): { exact: LayerCounters; semantic: LayerCounters; bypassed: number } {
    return { exact: { ...this.#exact }, semantic: { ...this.#semanticCounters }, bypassed: this.#bypassed };
  }

  /** Counters plus what the stores hold (counts Redis keys with SCAN: for admin use). */
  async stats(): Promise<CacheStats> {
    const { lru, redis } = this.stores;
    let entries: number | null = lru ? lru.size : null;
    if (!lru && redis) {
      entries = await countKeys(redis, redisKeys(cacheRedisNamespace(this.config)).exactPattern).catch(() => null);
    }
    const buckets: Record<string, number> = {};
    SIMILARITY_BUCKETS.forEach((le, i) => (buckets[String(le)] = this.#similarity.buckets[i]));
    return {
      store: this.stores.kind,
      exact: {
        enabled: this.config.cacheEnabled,
        ...this.#exact,
        entries,
        maxEntries: lru ? lru.capacity : null,
        evictions: lru ? lru.evictions : null,
        ttlSeconds: this.config.cacheTtlSeconds,
      },
      semantic: {
        enabled: this.#semantic !== null,
        ...this.#semanticCounters,
        entries: this.#semantic?.size ?? 0,
        maxEntries: this.config.semanticCacheMaxEntries,
        evictions: this.#semantic?.evictions ?? 0,
        threshold: this.config.semanticCacheThreshold,
        similarity: { count: this.#similarity.count, sum: this.#similarity.sum, buckets },
      },
      bypassed: this.#bypassed,
    };
  }

  /**
   * Empties the given layers (all by default). With Redis this is shared: every replica's exact
   * lookups miss at once, and each drops its semantic index on its next lookup.
   */
  async flush(layers: readonly CacheLayer[] = ['exact', 'semantic']): Promise<{ exact: number | null; semantic: number | null }> {
    const result: { exact: number | null; semantic: number | null } = { exact: null, semantic: null };
    for (const layer of layers) {
      if (layer !== 'exact' && layer !== 'semantic') {
        throw new CachingException(CachingErrorCode.InvalidLayer, `Unknown cache layer ${JSON.stringify(layer)}; use exact or semantic`);
      }
    }
    if (layers.includes('exact')) {
      const { lru, redis } = this.stores;
      if (lru) {
        result.exact = lru.size;
        await this.cache.clear();
      } else if (redis) {
        result.exact = await deleteKeys(redis, redisKeys(cacheRedisNamespace(this.config)).exactPattern);
      }
    }
    if (layers.includes('semantic')) {
      result.semantic = this.#semantic?.size ?? 0;
      if (this.#semantic) await this.#semantic.flush();
      else if (this.stores.redis) {
        // Not enabled here, but a replica may use it: clear the shared log all the same.
        const keys = redisKeys(cacheRedisNamespace(this.config));
        await this.stores.redis.multi().incr(keys.semanticEpoch).del(keys.semanticLog).exec();
      }
    }
    return result;
  }

  async #exactGet(key: string): Promise<CachedCompletion | null> {
    try {
      const value = await this.#bounded('exact read', this.cache.get<CachedCompletion>(key));
      if (this.#failedGets.delete(key)) throw new Error('store read failed');
      if (value === undefined || value === null) {
        this.#count('exact', 'miss');
        return null;
      }
      if (!isRecord(value)) throw new Error('stored entry is malformed');
      this.#count('exact', 'hit');
      return value;
    } catch (err) {
      this.#fail('exact', 'read', err);
      return null;
    }
  }

  async #semanticLookup(scope: string, vector: Float32Array): Promise<{ id: string; record: CachedCompletion; similarity: number } | null> {
    try {
      const found = await (this.#semantic as SemanticCache).lookup(scope, vector);
      if (found) {
        const s = found.match.similarity;
        this.#similarity.count++;
        this.#similarity.sum += s;
        SIMILARITY_BUCKETS.forEach((le, i) => {
          if (s <= le) this.#similarity.buckets[i]++;
        });
      }
      if (!found?.hit) {
        this.#count('semantic', 'miss', found?.match.similarity);
        return null;
      }
      this.#count('semantic', 'hit', found.match.similarity);
      return { id: found.match.id, record: found.match.value, similarity: found.match.similarity };
    } catch (err) {
      this.#fail('semantic', 'lookup', err);
      return null;
    }
  }

  async #embed(text: string): Promise<Float32Array | null> {
    try {
      return await (this.embedder as Embedder).embed(text);
    } catch (err) {
      this.#fail('semantic', 'embedding', err);
      return null;
    }
  }

  async #write(key: string, scope: string, text: string, vector: Float32Array | null | undefined, record: CachedCompletion): Promise<void> {
    if (debugEnabled()) this.#logger.debug(`store: ${shortKey(key)} (${record.completionTokens} tokens, ttl ${this.config.cacheTtlSeconds} s)${this.#semantic ? ' + semantic' : ''}`);
    const writes: Promise<void>[] = [];
    if (this.config.cacheEnabled) writes.push(this.#exactWrite(key, record));
    if (this.#semantic) {
      const semantic = this.#semantic;
      writes.push(
        (async () => {
          // A request that skipped the lookup (no-cache) has no vector yet; a failed embedding
          // was already counted and is not retried.
          const v = vector === undefined ? await this.#embed(text) : vector;
          if (!v) return;
          await this.#bounded('semantic write', semantic.store(key, scope, v, record));
          this.#semanticCounters.writes++;
        })().catch((err: unknown) => this.#fail('semantic', 'write', err)),
      );
    }
    await Promise.all(writes);
  }

  #exactWrite(key: string, record: CachedCompletion): Promise<void> {
    return this.#bounded('exact write', this.cache.set(key, record, this.config.cacheTtlSeconds * 1000)).then(
      () => void this.#exact.writes++,
      (err: unknown) => this.#fail('exact', 'write', err),
    );
  }

  #hit(status: CacheStatus, request: CacheableRequest, record: CachedCompletion, by: string, similarity?: number): CachedRun {
    const headers: Record<string, string> = { 'X-Cache': status };
    // Age says when the answer was made: only to the caller whose request made it (CACHE_SCOPE=global
    // shares answers between keys, not the time another key asked).
    if (record.by === by) headers.Age = String(Math.max(0, Math.floor((Date.now() - record.createdAt) / 1000)));
    if (similarity !== undefined) headers['X-Cache-Similarity'] = similarity.toFixed(4);
    return { status, similarity, headers, events: new Replay(record, request.billedPromptTokens) };
  }

  /**
   * The model's live events, passed through untouched while recorded; once the generation has
   * ended normally the answer is stored before the stream completes (so the next request sees
   * it). A consumer that stops early (client gone) leaves nothing stored.
   */
  #miss(events: AsyncIterable<CompletionEvent>, store: ((record: CachedCompletion) => Promise<void>) | null, by = ''): CachedRun {
    // Nothing to record: the model's own stream, not one more generator every token passes.
    if (!store) return { status: 'MISS', headers: { 'X-Cache': 'MISS' }, events };
    return {
      status: 'MISS',
      headers: { 'X-Cache': 'MISS' },
      events: (async function* () {
        const chunks: string[] = [];
        let done: Extract<CompletionEvent, { kind: 'done' }> | null = null;
        for await (const event of events) {
          if (event.kind === 'text') chunks.push(event.text);
          else done = event;
          yield event;
        }
        if (store && done && STORABLE_FINISH.has(done.finishReason)) {
          await store({ v: 1, chunks, finishReason: done.finishReason, completionTokens: done.completionTokens, ...(done.stopSequence === undefined ? {} : { stop: done.stopSequence }), createdAt: Date.now(), by });
        }
      })(),
    };
  }

  #bounded<T>(operation: string, work: Promise<T>): Promise<T> {
    // The in-process LRU answers synchronously: no timer to race on the hot path.
    if (this.stores.kind === 'memory' && !operation.startsWith('semantic')) return work;
    const ms = this.config.cacheTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CacheTimeout(operation, ms)), ms);
      timer.unref();
    });
    // The abandoned operation may still fail later; that is already counted as a timeout.
    work.catch(() => undefined);
    return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
  }

  #count(layer: CacheLayer, outcome: 'hit' | 'miss', similarity?: number): void {
    if (debugEnabled()) {
      const sim = similarity === undefined ? '' : ` (similarity ${similarity.toFixed(4)}, threshold ${this.config.semanticCacheThreshold})`;
      this.#logger.debug(`${layer} ${outcome}${sim}`);
    }
    const c = layer === 'exact' ? this.#exact : this.#semanticCounters;
    if (outcome === 'hit') c.hits++;
    else c.misses++;
    this.observer?.onLookup?.(layer, outcome, similarity);
  }

  #fail(layer: CacheLayer, operation: string, err: unknown): void {
    (layer === 'exact' ? this.#exact : this.#semanticCounters).errors++;
    this.observer?.onError?.(layer, operation);
    const kind = `${layer} ${operation}`;
    const now = Date.now();
    const last = this.#lastLog.get(kind);
    if (last && now - last.at < 10_000) {
      last.suppressed++;
      return;
    }
    const more = last?.suppressed ? ` (${last.suppressed} more since the last report)` : '';
    this.#lastLog.set(kind, { at: now, suppressed: 0 });
    this.#logger.warn(`${kind} failed, answering from the model: ${(err as Error)?.message ?? String(err)}${more}`);
  }
}

/** A short, one-way tag of the caller stored with an entry (key ids are not secrets, but need not be in Redis). */
function callerTag(caller: string | undefined): string {
  return hash('sha256', `caller:${caller ?? 'anonymous'}`, 'hex').slice(0, 16);
}

function isRecord(value: unknown): value is CachedCompletion {
  const r = value as CachedCompletion;
  return (
    typeof r === 'object' &&
    r !== null &&
    r.v === 1 &&
    Array.isArray(r.chunks) &&
    r.chunks.every((c) => typeof c === 'string') &&
    typeof r.finishReason === 'string' &&
    (r.stop === undefined || typeof r.stop === 'string') &&
    Number.isInteger(r.completionTokens) &&
    typeof r.createdAt === 'number'
  );
}

type Completion = { text: string; finishReason: string; promptTokens: number; completionTokens: number; cachedPromptTokens: number; stopSequence?: string };

/**
 * A stored answer as the model's events (same chunks, usage of this request's prompt), and, for a
 * caller that wants the whole answer at once, that answer without iterating: a hit's JSON reply
 * then costs no promise per chunk.
 */
class Replay implements AsyncIterable<CompletionEvent> {
  readonly #record: CachedCompletion;
  readonly #promptTokens: number;

  constructor(record: CachedCompletion, promptTokens: number) {
    this.#record = record;
    this.#promptTokens = promptTokens;
  }

  get done(): Extract<CompletionEvent, { kind: 'done' }> {
    return {
      kind: 'done',
      finishReason: this.#record.finishReason,
      promptTokens: this.#promptTokens,
      completionTokens: this.#record.completionTokens,
      // No prompt token was evaluated for this answer.
      cachedPromptTokens: this.#promptTokens,
      ...(this.#record.stop === undefined ? {} : { stopSequence: this.#record.stop }),
    };
  }

  completion(): Completion {
    const { kind: _kind, ...usage } = this.done;
    return { text: this.#record.chunks.join(''), ...usage };
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<CompletionEvent> {
    for (const text of this.#record.chunks) yield { kind: 'text', text };
    yield this.done;
  }
}

/**
 * Runs events to their very end (a cache write happens after the last event, so stopping at the
 * done event would skip it) and returns the whole text, how it finished and the usage.
 */
export async function collectCompletion(events: AsyncIterable<CompletionEvent>): Promise<Completion> {
  if (events instanceof Replay) return events.completion();
  let text = '';
  let done: Extract<CompletionEvent, { kind: 'done' }> | null = null;
  for await (const event of events) {
    if (event.kind === 'text') text += event.text;
    else done = event;
  }
  if (!done) throw new Error('generation ended without a result');
  const { kind: _kind, ...rest } = done;
  return { text, ...rest };
}

/** The tail of a cache key (its hash) for debug lines: enough to match a store with a later hit. */
function shortKey(key: string): string {
  return key.length > 16 ? `…${key.slice(-16)}` : key;
}
