import type { FlashAttention, KvCacheType } from '@app/common';

/** What a model serves: text generation (its own context and scheduler), embeddings, or ranking. */
export const MODEL_KINDS = ['chat', 'embedding', 'rerank'] as const;
export type ModelKind = (typeof MODEL_KINDS)[number];

/** Where a model's entry came from (for `model list` and the admin API). */
export type ModelSource = 'MODEL_PATH' | 'EMBEDDING_MODEL_PATH' | 'MODELS_FILE' | 'MODELS_DIR';

/**
 * Sampling a model uses when a request does not set the field (models file `defaults`). Request
 * fields always win; fields absent here fall back to the API's own defaults.
 */
export interface SamplingDefaults {
  readonly temperature?: number;
  readonly top_p?: number;
  readonly top_k?: number;
  readonly min_p?: number;
  readonly repeat_penalty?: number;
  readonly presence_penalty?: number;
  readonly frequency_penalty?: number;
  /** Completion tokens when a request sets no max_tokens. */
  readonly max_tokens?: number;
}

/**
 * One configured model, resolved: every setting has its value (the models file's, else the
 * server-wide variable's). The registry loads, routes and unloads by these.
 */
export interface ModelSpec {
  /** Id used in requests and responses; unique among ids and aliases. */
  readonly id: string;
  /** Other names that route to this model (`gpt-4o-mini` → a local model). */
  readonly aliases: readonly string[];
  readonly path: string;
  readonly kind: ModelKind;
  readonly source: ModelSource;
  /** KV-cache tokens per slot; undefined = the model's training context, at most 4096. */
  readonly contextSize: number | undefined;
  /** Concurrent generations (chat) — sequences of the model's context. */
  readonly slots: number;
  readonly batchSize: number;
  /** Most threads of this model's engine pool; undefined = every core (see README, "Several models"). */
  readonly threads: number | undefined;
  /** Layers on the GPU; undefined = as many as fit (`auto`). */
  readonly gpuLayers: number | undefined;
  readonly flashAttention: FlashAttention;
  readonly kvCacheTypeK: KvCacheType;
  readonly kvCacheTypeV: KvCacheType;
  /** ms after the last request before the model is unloaded; -1 = never, 0 = when idle. */
  readonly keepAliveMs: number;
  /** Loaded at start (the default model always is). */
  readonly preload: boolean;
  readonly defaults: SamplingDefaults;
}

/** Lifecycle of a registry entry, as `/v1/models` and the admin API report it. */
export type ModelLoadState = 'unloaded' | 'loading' | 'loaded' | 'unloading' | 'failed';

/** Memory a model takes, in bytes: node-llama-cpp's estimate for its weights and contexts. */
export interface MemoryFootprint {
  readonly ram: number;
  readonly vram: number;
}
