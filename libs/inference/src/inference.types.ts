import type { FlashAttention, KvCacheType } from '@app/common';
import type { ModelKind } from './registry/model.types';
import type { ToolCall } from './tools/tool.types';

/** What `GET /v1/models`, `model info` and the health routes say about the served model. */
export interface ModelDescriptor {
  /** Model id used in API requests and responses. */
  readonly id: string;
  readonly kind: ModelKind;
  readonly path: string;
  readonly sizeBytes: number;
  readonly architecture: string;
  readonly parameters: number | null;
  readonly trainContextSize: number;
  /** KV-cache tokens per slot (prompt + completion); for embedding and ranking models, their context. */
  readonly contextSize: number;
  readonly vocabularySize: number;
  readonly embeddingLength: number;
  readonly layers: number;
  /** `false` on CPU, else the backend name (cuda, vulkan, metal). */
  readonly gpu: string | false;
  readonly gpuLayers: number;
  readonly gpuFallbackReason: string | null;
  /** Concurrent generations; 0 for embedding and ranking models. */
  readonly slots: number;
  readonly threads: number;
  /** What drives decode calls: the engine addon (persistent threadpool) or node-llama-cpp's binding. */
  readonly engine: 'addon' | 'node-llama-cpp';
  /** Why the engine is what it is (for logs and `model info`). */
  readonly engineNote: string;
  readonly batchSize: number;
  /** `gguf` when the file carries its own chat template, else `fallback` (see README). */
  readonly chatTemplate: 'gguf' | 'fallback';
  /** Flash attention as configured (`auto`: llama.cpp uses it when the model and backend support it). */
  readonly flashAttention: FlashAttention;
  readonly kvCacheTypeK: KvCacheType;
  readonly kvCacheTypeV: KvCacheType;
  readonly loadMs: number;
}

export interface ChatMessage {
  readonly role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  readonly content: string;
  /** Assistant messages: the calls the model made in that turn. */
  readonly toolCalls?: readonly ToolCall[];
  /** Tool messages: the call this is the result of (an id from an earlier `toolCalls`). */
  readonly toolCallId?: string;
}

/** A chat rendered by the model's template: tokens to evaluate and template stop strings. */
export interface RenderedChat {
  readonly tokens: number[];
  readonly stop: string[];
}

/** The embedding model's tokenizer: chunkers cut documents on its token boundaries. */
export interface EmbeddingTokenizer {
  tokenize(text: string): number[];
  detokenize(tokens: readonly number[]): string;
  /** Most tokens one embedding input may have (BOS excluded). */
  readonly maxTokens: number;
}

export interface EmbeddingResult {
  readonly vectors: Float32Array[];
  readonly promptTokens: number;
}
