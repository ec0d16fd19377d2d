/**
 * What a generation yields, as the caches see it. The scheduler's GenerationEvent has this shape
 * (plus fields the caches ignore), so a generation can be handed over as is.
 */
export type CompletionEvent =
  | { readonly kind: 'text'; readonly text: string }
  | {
      readonly kind: 'done';
      readonly finishReason: string;
      readonly promptTokens: number;
      readonly completionTokens: number;
      readonly cachedPromptTokens: number;
      /** The stop string that ended the text, when one did (Anthropic's `stop_sequence`). */
      readonly stopSequence?: string;
    };

/** Sampling as the model receives it; `undefined` means the runtime's default. */
export interface CacheSampling {
  readonly temperature: number;
  readonly seed?: number;
  readonly [field: string]: number | boolean | string | undefined;
}

/**
 * Everything about a request that can change the model's output, resolved (defaults applied,
 * prompt tokenised and templated). Two requests with equal fields get the same answer.
 */
export interface CacheableRequest {
  /** Response family (`generate`, `completions`, `chat`): families never share entries. */
  readonly endpoint: string;
  /** Prompt tokens after templating (without BOS). */
  readonly promptTokens: readonly number[];
  /** Prompt tokens as billed (BOS included): the usage a cached answer reports. */
  readonly billedPromptTokens: number;
  /** max_tokens as resolved against the context. */
  readonly maxTokens: number;
  /** max_tokens as the client sent it (null: endpoint default); scopes the semantic cache. */
  readonly requestedMaxTokens: number | null;
  readonly sampling: CacheSampling;
  /** Every stop string, the chat template's included. */
  readonly stop: readonly string[];
  /** Text that the semantic cache embeds: the prompt, or the conversation rendered as text. */
  readonly text: string;
  /**
   * The model that answers: its GGUF (whose fingerprint is part of every key) and its id (also
   * part of it: two configured models never share entries, even on one file, since their
   * settings, e.g. a quantized KV cache, can change the output). Default: MODEL_PATH alone.
   */
  readonly model?: { readonly id: string; readonly path: string };
}

/** Per-request cache instructions (request headers). */
export interface CacheDirectives {
  /** `Cache-Control: no-cache`: do not answer from a cache (the answer may still be stored). */
  readonly noCache: boolean;
  /** `Cache-Control: no-store`: do not store this answer. */
  readonly noStore: boolean;
  /** `X-Cache-Sampled: true|false`: overrides CACHE_SAMPLED for this request. */
  readonly sampled?: boolean;
  /**
   * Who asks: the caller's API key id (undefined: no key, e.g. AUTH_DISABLED). With CACHE_SCOPE=key
   * (the default) a request is only answered from entries stored by requests of the same caller.
   */
  readonly caller?: string;
}

export type CacheStatus = 'HIT' | 'SEMANTIC-HIT' | 'MISS';

/** A stored answer: the text as the model produced it, chunk by chunk, so a replay streams alike. */
export interface CachedCompletion {
  readonly v: 1;
  readonly chunks: readonly string[];
  readonly finishReason: string;
  readonly completionTokens: number;
  /** The stop string that ended it, when one did (absent in records written before it was kept). */
  readonly stop?: string;
  /** Epoch ms when the model produced it. */
  readonly createdAt: number;
  /** Hash of the caller that stored it: `Age` is only sent on a hit by that same caller. */
  readonly by?: string;
}

/** A request answered through the caches: where the answer came from and its events. */
export interface CachedRun {
  /** null when every cache is disabled (no X-Cache header then). */
  readonly status: CacheStatus | null;
  readonly similarity?: number;
  /** X-Cache, X-Cache-Similarity and Age, ready to send. */
  readonly headers: Record<string, string>;
  readonly events: AsyncIterable<CompletionEvent>;
}

/**
 * Embeds text for the semantic cache. apps/api provides it from the inference layer (which the
 * caching library must not import).
 */
export interface Embedder {
  embed(text: string): Promise<Float32Array>;
  /** The GGUF that embeds (its fingerprint scopes the semantic cache); default EMBEDDING_MODEL_PATH. */
  modelPath?(): string;
}

/** Injection token of the Embedder. */
export const EMBEDDER = Symbol('EMBEDDER');

export type CacheLayer = 'exact' | 'semantic';

/** Optional provider (e.g. Prometheus metrics) told about every cache decision. */
export interface CacheObserver {
  onLookup?(layer: CacheLayer, outcome: 'hit' | 'miss', similarity?: number): void;
  onError?(layer: CacheLayer, operation: string): void;
}

/** Injection token of an optional CacheObserver. */
export const CACHE_OBSERVER = Symbol('CACHE_OBSERVER');

/** Upper bounds of the similarity histogram kept in the stats (best match of each lookup). */
export const SIMILARITY_BUCKETS = [0.5, 0.8, 0.9, 0.95, 0.97, 0.99, 1] as const;

export interface LayerCounters {
  hits: number;
  misses: number;
  writes: number;
  errors: number;
}

export interface CacheStats {
  readonly store: 'memory' | 'redis';
  readonly exact: LayerCounters & {
    readonly enabled: boolean;
    /** Stored entries (this process's LRU, or the namespace's keys in Redis); null if unknown. */
    readonly entries: number | null;
    readonly maxEntries: number | null;
    readonly evictions: number | null;
    readonly ttlSeconds: number;
  };
  readonly semantic: LayerCounters & {
    readonly enabled: boolean;
    readonly entries: number;
    readonly maxEntries: number;
    readonly evictions: number;
    readonly threshold: number;
    /** Best similarity of each lookup: count, sum and cumulative buckets (`le`). */
    readonly similarity: { count: number; sum: number; buckets: Record<string, number> };
  };
  /** Requests answered by the model because they were not cacheable (sampled, no-cache). */
  readonly bypassed: number;
}
