import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown, Inject } from '@nestjs/common';
import type { InferenceConfig } from '../inference.config';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type * as NodeLlamaCpp from 'node-llama-cpp';
import { AppConfig } from '@app/common';
import { InferenceService } from '../inference.service';
import { RankingErrorCode, RankingException } from './ranking.exception';

/** Most tokens of one query + document pair (the ranking context's size, at most the model's training context). */
const MAX_RANK_CONTEXT = 2048;

interface Ranker {
  readonly model: NodeLlamaCpp.LlamaModel;
  readonly context: NodeLlamaCpp.LlamaRankingContext;
}

/**
 * The reranker: a cross-encoder GGUF (RERANK_MODEL_PATH: a classifier head, `cls.output`, over a
 * pooled sequence, as llama.cpp's LLAMA_POOLING_TYPE_RANK expects) scoring how relevant each
 * document is to a query, through node-llama-cpp's ranking context: one evaluation per
 * (query, document) pair, its classifier output as a probability (sigmoid of the logit; Qwen3's
 * softmax over yes/no). Loaded on the CPU once the served model is ready; requests wait for it.
 * Evaluations are serialised on the one context and run off the event loop.
 */
@Injectable()
export class RerankerService implements OnApplicationBootstrap, OnApplicationShutdown {
  readonly #logger = new Logger('Reranker');
  #ranker: Promise<Ranker> | null = null;

  constructor(
    private readonly inference: InferenceService,
    @Inject(AppConfig) private readonly config: InferenceConfig,
  ) {}

  onApplicationBootstrap(): void {
    if (!this.configured) return;
    this.inference
      .whenReady()
      .then(() => this.#load())
      .then(
        (r) => this.#logger.log(`Reranker ${this.id} ready (context ${r.context.contextSize} tokens)`),
        (err: Error) => this.#logger.error(`Reranker ${this.config.rerankModelPath} failed to load: ${err.message}`),
      );
  }

  async onApplicationShutdown(): Promise<void> {
    const ranker = await this.#ranker?.catch(() => null);
    this.#ranker = null;
    await ranker?.context.dispose().catch(() => undefined);
    await ranker?.model.dispose().catch(() => undefined);
  }

  /** Whether RERANK_MODEL_PATH names a model. */
  get configured(): boolean {
    return this.config.rerankModelPath !== undefined;
  }

  /** The reranker's model id: its file name without `.gguf`. */
  get id(): string {
    return (this.config.rerankModelPath ?? '').split('/').pop()?.replace(/\.gguf$/i, '') ?? '';
  }

  /** Throws unless a reranker is configured and `requested` (when given) names it (its id or file name). */
  assertModel(requested: string | undefined): void {
    const path = this.config.rerankModelPath;
    if (path === undefined) {
      throw new RankingException(RankingErrorCode.NotConfigured, 'No reranking model is configured on this server (set RERANK_MODEL_PATH to a reranker GGUF)');
    }
    if (requested !== undefined && requested !== this.id && requested !== path.split('/').pop()) {
      throw new RankingException(RankingErrorCode.ModelNotFound, `The reranking model '${requested}' does not exist; this server reranks with '${this.id}'`, { param: 'model' });
    }
  }

  /**
   * Tokens each (query, document) pair is evaluated with (the template or BOS/EOS/SEP included):
   * what a request is charged. A pair that does not fit the ranking context is a 400 naming it.
   */
  async measure(query: string, documents: readonly string[]): Promise<number[]> {
    const { context } = await this.#ready();
    const limit = context.contextSize;
    return documents.map((document, i) => {
      const n = context.calculateInputLength(query, document);
      if (n >= limit) {
        throw new RankingException(RankingErrorCode.InputTooLong, `The query and documents[${i}] make ${n} tokens; the reranker's context holds ${limit - 1}: shorten them`, { param: `documents[${i}]` });
      }
      return n;
    });
  }

  /** Relevance of each document to the query, from 0 to 1, in the documents' order. Stops between documents once `signal` fires. */
  async rank(query: string, documents: readonly string[], signal?: AbortSignal): Promise<number[]> {
    const { context } = await this.#ready();
    // A pair longer than the context is a 400 here, not node-llama-cpp's plain error mid-way.
    await this.measure(query, documents);
    const scores: number[] = [];
    for (const document of documents) {
      signal?.throwIfAborted();
      scores.push(await context.rank(query, document));
    }
    return scores;
  }

  async #ready(): Promise<Ranker> {
    this.assertModel(undefined);
    await this.inference.whenReady();
    try {
      return await this.#load();
    } catch (err) {
      throw new RankingException(RankingErrorCode.LoadFailed, `The reranking model cannot be used: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Loads the model and its ranking context once; a failed load is retried by the next request. */
  #load(): Promise<Ranker> {
    this.#ranker ??= (async () => {
      const path = this.config.rerankModelPath as string;
      const llama = await this.inference.llama();
      if (!existsSync(path)) throw new Error(`file not found: ${path}`);
      const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
      try {
        const size = Math.min(model.trainContextSize, MAX_RANK_CONTEXT);
        // The whole pair in one batch: encoder rerankers (BERT) attend over all of it at once.
        const context = await model.createRankingContext({ contextSize: size, batchSize: size, threads: this.config.threads ?? Math.max(1, availableParallelism() - 1) });
        return { model, context };
      } catch (err) {
        await model.dispose().catch(() => undefined);
        throw err;
      }
    })();
    this.#ranker.catch(() => (this.#ranker = null));
    return this.#ranker;
  }
}
