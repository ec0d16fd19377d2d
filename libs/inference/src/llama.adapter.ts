import { Injectable, Logger } from '@nestjs/common';
import { existsSync, statSync } from 'node:fs';
import type * as NodeLlamaCpp from 'node-llama-cpp';
import { AppConfig } from '@app/common';
import { GenerationEvent, GenerationJob, SlotRuntime, SlotState } from '@app/batching';
import { AsyncChannel } from './async.channel';
import { probeGpu } from './gpu.probe';
import { InferenceErrorCode, InferenceException } from './inference.exception';
import { ChatMessage, EmbeddingResult, ModelDescriptor, RenderedChat } from './inference.types';

type Lib = typeof NodeLlamaCpp;

/** Used when the GGUF carries no chat template; documented in the README. */
export const FALLBACK_CHAT_TEMPLATE = {
  system: (text: string) => `${text}\n\n`,
  user: (text: string) => `User: ${text}\n`,
  assistant: (text: string) => `Assistant: ${text}\n`,
  generationPrompt: 'Assistant:',
  stop: ['\nUser:'],
} as const;

const FINISH_REASONS: Record<string, 'stop' | 'length' | 'abort'> = {
  eogToken: 'stop',
  stopGenerationTrigger: 'stop',
  customStopTrigger: 'stop',
  maxTokens: 'length',
  abort: 'abort',
};

/**
 * The only place that touches node-llama-cpp. Owns the model, one shared context whose
 * sequences are the scheduler's slots, and a lazily created embedding context.
 */
@Injectable()
export class LlamaAdapter implements SlotRuntime {
  readonly #logger = new Logger('Inference');
  #lib!: Lib;
  #llama: NodeLlamaCpp.Llama | null = null;
  #model: NodeLlamaCpp.LlamaModel | null = null;
  #context: NodeLlamaCpp.LlamaContext | null = null;
  #sequences: NodeLlamaCpp.LlamaContextSequence[] = [];
  #completions: NodeLlamaCpp.LlamaCompletion[] = [];
  #chatWrapper: NodeLlamaCpp.ChatWrapper | null = null;
  #embedding: Promise<NodeLlamaCpp.LlamaEmbeddingContext> | null = null;
  #embedLock: Promise<unknown> = Promise.resolve();
  #otherEmbedding: Promise<{ model: NodeLlamaCpp.LlamaModel; context: NodeLlamaCpp.LlamaEmbeddingContext }> | null = null;
  #descriptor: ModelDescriptor | null = null;
  #bosPrepended = false;
  #generatedTokens = 0;
  #noEosBias: NodeLlamaCpp.TokenBias | null = null;

  constructor(private readonly config: AppConfig) {}

  get slotCount(): number {
    return this.config.parallelSlots;
  }

  get isLoaded(): boolean {
    return this.#descriptor !== null;
  }

  get descriptor(): ModelDescriptor {
    if (!this.#descriptor) throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading');
    return this.#descriptor;
  }

  /** Loads backend, model and context. Throws a one-line error for a missing or unreadable model. */
  async load(): Promise<ModelDescriptor> {
    const started = Date.now();
    const { modelPath } = this.config;
    if (!existsSync(modelPath) || !statSync(modelPath).isFile()) {
      throw new Error(`Model file not found: ${modelPath} (set MODEL_PATH to a GGUF file)`);
    }
    const probe = await probeGpu(this.config.gpu, modelPath);
    if (probe.fallbackReason) this.#logger.warn(`${probe.fallbackReason}; falling back to CPU`);
    this.#lib = await import('node-llama-cpp');
    this.#llama = await this.#lib.getLlama({
      gpu: probe.gpu,
      build: 'never',
      logLevel: this.#lib.LlamaLogLevel.error,
      progressLogs: false,
    });
    let lastLogged = -1;
    try {
      this.#model = await this.#llama.loadModel({
        modelPath,
        gpuLayers: probe.gpu ? (this.config.gpuLayers ?? 'auto') : 0,
        onLoadProgress: (progress: number) => {
          const pct = Math.floor(progress * 4) * 25;
          if (pct > lastLogged) {
            lastLogged = pct;
            this.#logger.log(`Loading model ${this.config.modelName}: ${pct}%`);
          }
        },
      });
    } catch (err) {
      throw new Error(`Cannot load model ${modelPath}: ${(err as Error).message}`);
    }
    const model = this.#model;
    const trainContextSize = model.trainContextSize;
    const contextSize = this.config.contextSize ?? Math.min(trainContextSize, 4096);
    this.#context = await model.createContext({
      sequences: this.config.parallelSlots,
      contextSize,
      threads: this.config.threads,
      batchSize: this.config.batchSize,
    });
    for (let i = 0; i < this.config.parallelSlots; i++) {
      const sequence = this.#context.getSequence();
      this.#sequences.push(sequence);
      this.#completions.push(new this.#lib.LlamaCompletion({ contextSequence: sequence }));
    }
    const template = (model.fileInfo.metadata as { tokenizer?: { chat_template?: unknown } }).tokenizer?.chat_template;
    this.#chatWrapper = typeof template === 'string' && template.length > 0 ? this.#lib.resolveChatWrapper(model) : null;
    this.#bosPrepended = model.tokens.shouldPrependBosToken && model.tokens.bos !== null;

    const tensors = model.fileInfo.fullTensorInfo ?? [];
    const parameters = tensors.length
      ? tensors.reduce((sum, t) => sum + t.dimensions.reduce<number>((a, b) => a * Number(b), 1), 0)
      : null;
    const tokenList = (model.fileInfo.metadata as unknown as { tokenizer?: { ggml?: { tokens?: readonly unknown[] } } }).tokenizer?.ggml?.tokens;
    this.#descriptor = {
      id: this.config.modelName,
      path: modelPath,
      sizeBytes: statSync(modelPath).size,
      architecture: String(model.fileInfo.metadata.general?.architecture ?? 'unknown'),
      parameters,
      trainContextSize,
      contextSize: this.#context.contextSize,
      vocabularySize: tokenList?.length ?? 0,
      embeddingLength: model.embeddingVectorSize,
      layers: model.fileInsights.totalLayers,
      gpu: this.#llama.gpu,
      gpuLayers: model.gpuLayers,
      gpuFallbackReason: probe.fallbackReason,
      slots: this.config.parallelSlots,
      threads: this.config.threads,
      batchSize: this.config.batchSize,
      chatTemplate: this.#chatWrapper ? 'gguf' : 'fallback',
      loadMs: Date.now() - started,
    };
    const d = this.#descriptor;
    this.#logger.log(
      `Model ${d.id} ready in ${d.loadMs} ms: ${d.architecture}, ${(d.sizeBytes / 1e6).toFixed(1)} MB, ` +
        `context ${d.contextSize} x ${d.slots} slots, ${d.threads} threads, ` +
        `${d.gpu ? `${d.gpu} (${d.gpuLayers} layers)` : 'CPU'}`,
    );
    return d;
  }

  /** Tokens of `text` as the model sees it, without BOS. */
  tokenize(text: string): number[] {
    return this.#requireModel().tokenize(text) as number[];
  }

  detokenize(tokens: readonly number[]): string {
    return this.#requireModel().detokenize(tokens as NodeLlamaCpp.Token[]);
  }

  /** Tokens the generation will add in front of the prompt (BOS), counted in usage. */
  get promptOverhead(): number {
    return this.#bosPrepended ? 1 : 0;
  }

  /** Renders chat messages with the GGUF's template, or the documented fallback. */
  renderChat(messages: readonly ChatMessage[]): RenderedChat {
    const model = this.#requireModel();
    if (!this.#chatWrapper) {
      const t = FALLBACK_CHAT_TEMPLATE;
      const text =
        messages
          .map((m) => (m.role === 'user' ? t.user(m.content) : m.role === 'assistant' ? t.assistant(m.content) : t.system(m.content)))
          .join('') + t.generationPrompt;
      return { tokens: this.tokenize(text), stop: [...t.stop] };
    }
    const history: NodeLlamaCpp.ChatHistoryItem[] = messages.map((m) =>
      m.role === 'user'
        ? { type: 'user', text: m.content }
        : m.role === 'assistant'
          ? { type: 'model', response: [m.content] }
          : { type: 'system', text: m.content },
    );
    history.push({ type: 'model', response: [] });
    const state = this.#chatWrapper.generateContextState({ chatHistory: history });
    let tokens = state.contextText.tokenize(model.tokenizer) as number[];
    // LlamaCompletion prepends BOS itself; a template that also writes it would double it.
    if (this.#bosPrepended && tokens[0] === model.tokens.bos) tokens = tokens.slice(1);
    const stop = state.stopGenerationTriggers
      .filter((trigger) => trigger.values.every((v) => typeof v === 'string'))
      .map((trigger) => trigger.values.join(''))
      .filter((s) => s.length > 0);
    return { tokens, stop };
  }

  cachedPrefixLength(slot: number, prompt: readonly number[]): number {
    const cached = this.#sequences[slot]?.contextTokens;
    if (!cached?.length) return 0;
    const bos = this.#bosPrepended ? this.#model?.tokens.bos : null;
    let n = 0;
    if (bos !== null && bos !== undefined) {
      if (cached[0] !== bos) return 0;
      n = 1;
    }
    const offset = n;
    while (n - offset < prompt.length && n < cached.length && cached[n] === prompt[n - offset]) n++;
    // The last prompt token is always evaluated again: its logits start the generation.
    return Math.min(n, prompt.length + offset - 1);
  }

  async *run(
    slot: number,
    job: GenerationJob,
    signal: AbortSignal,
    onState: (state: SlotState) => void,
  ): AsyncGenerator<GenerationEvent> {
    const completion = this.#completions[slot];
    if (!completion) throw new RangeError(`slot ${slot} does not exist (slots: ${this.#completions.length})`);
    const cachedPromptTokens = this.cachedPrefixLength(slot, job.prompt);
    const channel = new AsyncChannel<GenerationEvent>();
    const stop = new AbortController();
    const forward = (): void => stop.abort(signal.reason);
    if (signal.aborted) forward();
    signal.addEventListener('abort', forward, { once: true });
    let completionTokens = 0;
    let pendingTokens = 0;
    const s = job.sampling;
    const penalties = (s.repeatPenalty ?? 1) !== 1 || (s.presencePenalty ?? 0) !== 0 || (s.frequencyPenalty ?? 0) !== 0;
    const done = completion
      .generateCompletionWithMeta(job.prompt as NodeLlamaCpp.Token[], {
        maxTokens: job.maxTokens,
        temperature: s.temperature ?? 0,
        topP: s.topP,
        topK: s.topK,
        minP: s.minP,
        seed: s.seed,
        repeatPenalty: penalties
          ? { penalty: s.repeatPenalty ?? 1, presencePenalty: s.presencePenalty ?? 0, frequencyPenalty: s.frequencyPenalty ?? 0 }
          : false,
        customStopTriggers: job.stop.length ? [...job.stop] : undefined,
        tokenBias: s.ignoreEos ? this.#eosBan() : undefined,
        disableContextShift: true,
        signal: stop.signal,
        stopOnAbortSignal: true,
        onToken: (tokens) => {
          if (completionTokens === 0) onState(SlotState.Decode);
          completionTokens += tokens.length;
          this.#generatedTokens += tokens.length;
          pendingTokens += tokens.length;
        },
        onTextChunk: (text) => {
          if (text.length === 0) return;
          channel.push({ kind: 'text', text, tokens: pendingTokens });
          pendingTokens = 0;
        },
      })
      .then(
        (result) => {
          channel.push({
            kind: 'done',
            finishReason: FINISH_REASONS[result.metadata.stopReason] ?? 'stop',
            promptTokens: job.prompt.length + (this.#bosPrepended ? 1 : 0),
            completionTokens,
            cachedPromptTokens,
          });
          channel.close();
        },
        (err: unknown) =>
          channel.close(
            new InferenceException(InferenceErrorCode.GenerationFailed, 'Generation failed', { cause: err }),
          ),
      );
    try {
      yield* channel;
    } finally {
      signal.removeEventListener('abort', forward);
      stop.abort();
      onState(SlotState.Draining);
      await done; // the sequence is ours until node-llama-cpp has let go of it
    }
  }

  /**
   * Embeds texts one by one on a dedicated embedding context (created on first use), of the
   * served model or, with `modelPath`, of another GGUF loaded on first use (EMBEDDING_MODEL_PATH
   * for the semantic cache).
   */
  embed(texts: readonly string[], modelPath?: string): Promise<EmbeddingResult> {
    const run = async (): Promise<EmbeddingResult> => {
      const model = this.#requireModel();
      let context: NodeLlamaCpp.LlamaEmbeddingContext;
      let tokenizer = model;
      let limit = Math.min(model.trainContextSize, 2048);
      if (modelPath === undefined || modelPath === this.config.modelPath) {
        this.#embedding ??= model.createEmbeddingContext({ contextSize: limit, threads: this.config.threads });
        context = await this.#embedding;
      } else {
        const other = await this.#otherEmbedder(modelPath);
        ({ context, model: tokenizer } = other);
        limit = Math.min(tokenizer.trainContextSize, 2048);
      }
      const bos = tokenizer.tokens.shouldPrependBosToken && tokenizer.tokens.bos !== null ? 1 : 0;
      let promptTokens = 0;
      const vectors: Float32Array[] = [];
      for (const [index, text] of texts.entries()) {
        const count = tokenizer.tokenize(text).length + bos;
        if (count > limit) {
          throw new InferenceException(
            InferenceErrorCode.EmbeddingInputTooLong,
            `input[${index}] has ${count} tokens; the embedding context holds ${limit}`,
            { param: 'input' },
          );
        }
        promptTokens += count;
        const embedding = await context.getEmbeddingFor(text);
        vectors.push(Float32Array.from(embedding.vector));
      }
      return { vectors, promptTokens };
    };
    const result = this.#embedLock.then(run, run);
    this.#embedLock = result.catch(() => undefined);
    return result;
  }

  /** A second model used only for embeddings, loaded once on first use (on the CPU). */
  #otherEmbedder(modelPath: string): Promise<{ model: NodeLlamaCpp.LlamaModel; context: NodeLlamaCpp.LlamaEmbeddingContext }> {
    this.#otherEmbedding ??= (async () => {
      const llama = this.#llama;
      if (!llama) throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading');
      if (!existsSync(modelPath)) throw new Error(`Embedding model file not found: ${modelPath}`);
      const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
      const context = await model.createEmbeddingContext({ contextSize: Math.min(model.trainContextSize, 2048), threads: this.config.threads });
      return { model, context };
    })();
    // A failed load is retried on the next call rather than cached forever.
    this.#otherEmbedding.catch(() => (this.#otherEmbedding = null));
    return this.#otherEmbedding;
  }

  async dispose(): Promise<void> {
    const embedding = this.#embedding;
    this.#embedding = null;
    await (await embedding?.catch(() => null))?.dispose();
    const other = await this.#otherEmbedding?.catch(() => null);
    this.#otherEmbedding = null;
    await other?.context.dispose();
    await other?.model.dispose();
    await this.#context?.dispose();
    await this.#model?.dispose();
    await this.#llama?.dispose();
    this.#context = this.#model = this.#llama = null;
    this.#sequences = [];
    this.#completions = [];
  }

  /** Tokens generated since start, aborted generations included. */
  get generatedTokens(): number {
    return this.#generatedTokens;
  }

  #eosBan(): NodeLlamaCpp.TokenBias {
    if (!this.#noEosBias) {
      const model = this.#requireModel();
      const bias = new this.#lib.TokenBias(model.tokenizer);
      for (const token of [model.tokens.eos, model.tokens.eot]) if (token !== null) bias.set(token, 'never');
      this.#noEosBias = bias;
    }
    return this.#noEosBias;
  }

  #requireModel(): NodeLlamaCpp.LlamaModel {
    if (!this.#model) throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading');
    return this.#model;
  }
}
