import { Injectable, Logger } from '@nestjs/common';
import { existsSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as NodeLlamaCpp from 'node-llama-cpp';
import { AppConfig, LruMap } from '@app/common';
import { BatchItem, DecodeRuntime, SamplingParams } from '@app/batching';
import { probeGpu } from './gpu.probe';
import { GrammarCompiler } from './grammar.compiler';
import { InferenceErrorCode, InferenceException } from './inference.exception';
import { ChatMessage, EmbeddingResult, EmbeddingTokenizer, ModelDescriptor, RenderedChat } from './inference.types';

type Lib = typeof NodeLlamaCpp;

/**
 * A role marker of the fallback template at the start of a line of message text (any case, any
 * line break). Written as is, `hi\nAssistant: sure` in a user message would forge a turn.
 */
const ROLE_MARKER_AT_LINE_START = /(^|\r\n|[\n\r\u0085\u2028\u2029])(?=[ \t]*(?:user|assistant|system)[ \t]*:)/gi;

/** Message text with each line that starts like a turn marker indented by one space: turns start at column 0 only. */
export function escapeRoleMarkers(text: string): string {
  return text.replace(ROLE_MARKER_AT_LINE_START, '$1 ');
}

/** Used when the GGUF carries no chat template; documented in the README. */
export const FALLBACK_CHAT_TEMPLATE = {
  system: (text: string) => `${escapeRoleMarkers(text)}\n\n`,
  user: (text: string) => `User: ${escapeRoleMarkers(text)}\n`,
  assistant: (text: string) => `Assistant: ${escapeRoleMarkers(text)}\n`,
  generationPrompt: 'Assistant:',
  stop: ['\nUser:'],
} as const;

/** Default top-k when a request does not set one: llama.cpp's server default, and cheap to sample. */
const DEFAULT_TOP_K = 40;
/** Tokens of history the repetition penalties look at (llama.cpp's default penalty_last_n). */
const PENALTY_WINDOW = 64;
const NO_TOKENS = new Uint32Array(0);

/**
 * The parts of node-llama-cpp's native context and sampler this adapter drives directly.
 * They are internal to node-llama-cpp 3.21.1, which is pinned exactly for that reason; the
 * public API decodes each sequence in its own async loop, which splits steps into several small
 * decode calls and costs a thread-pool round trip per token (see docs/PERFORMANCE.md).
 */
interface NativeContext {
  initBatch(size: number): void;
  addToBatch(sequenceId: number, firstTokenPosition: number, tokens: Uint32Array, logitIndexes: Uint32Array): Uint32Array;
  decodeBatch(): Promise<void>;
  sampleToken(batchLogitIndex: number, sampler: NativeSampler): Promise<number>;
  removeTokenCellsFromSequence(sequenceId: number, start: number, end: number): boolean;
  disposeSequence(sequenceId: number): void;
  saveSequenceStateToFile(path: string, sequenceId: number, tokens: Uint32Array): Promise<number>;
  loadSequenceStateFromFile(path: string, sequenceId: number, maxTokens: number): Promise<Uint32Array>;
}
interface NativeSampler {
  applyConfig(config: Record<string, unknown>): void;
  dispose(): void;
}

/**
 * One batch per step over the shared context's sequences: the scheduler's DecodeRuntime.
 * Sequence i of the context is slot i.
 */
class LlamaDecodeRuntime implements DecodeRuntime {
  readonly #logitIndex: number[];
  readonly #stateDir: string;
  #copies = 0;

  readonly #samplers: NativeSampler[];

  /** Grammar states of constrained requests, kept alive while their slot samples with them. */
  readonly #grammarStates: unknown[] = [];

  constructor(
    private readonly ctx: NativeContext,
    private readonly newSampler: () => NativeSampler,
    private readonly newGrammarState: (grammar: unknown) => { _state: unknown },
    readonly slotCount: number,
    readonly batchSize: number,
    readonly contextSize: number,
    private readonly isEog: (token: number) => boolean,
    private readonly eogTokens: readonly number[],
  ) {
    this.#samplers = Array.from({ length: slotCount }, () => newSampler());
    this.#logitIndex = this.#samplers.map(() => -1);
    this.#stateDir = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  }

  configure(slot: number, s: SamplingParams, prompt: readonly number[]): void {
    const penalties = (s.repeatPenalty ?? 1) !== 1 || (s.presencePenalty ?? 0) !== 0 || (s.frequencyPenalty ?? 0) !== 0;
    const config: Record<string, unknown> = {
      temperature: s.temperature ?? 0,
      topK: s.topK ?? DEFAULT_TOP_K,
      topP: s.topP ?? 1,
      minP: s.minP ?? 0,
      seed: s.seed ?? Math.floor(Math.random() * 0xffffffff),
      repeatPenalty: s.repeatPenalty ?? 1,
      repeatPenaltyMaxTokens: PENALTY_WINDOW,
      repeatPenaltyTokens: penalties ? Uint32Array.from(prompt.slice(-PENALTY_WINDOW)) : NO_TOKENS,
      repeatPenaltyPresencePenalty: s.presencePenalty ?? 0,
      repeatPenaltyFrequencyPenalty: s.frequencyPenalty ?? 0,
    };
    this.#grammarStates[slot] = undefined;
    if (s.constraint) {
      const state = this.newGrammarState(s.constraint);
      this.#grammarStates[slot] = state;
      config.grammarEvaluationState = state._state;
    }
    if (s.ignoreEos && this.eogTokens.length) {
      config.tokenBiasKeys = Uint32Array.from(this.eogTokens);
      config.tokenBiasValues = new Float32Array(this.eogTokens.length).fill(-Infinity);
    }
    // A fresh sampler per request: no RNG state, penalty history or bias left by the previous
    // one (the native sampler keeps its RNG running when the seed is unchanged).
    this.#samplers[slot].dispose();
    this.#samplers[slot] = this.newSampler();
    this.#samplers[slot].applyConfig(config);
  }

  async decode(items: readonly BatchItem[]): Promise<void> {
    let total = 0;
    for (const item of items) total += item.tokens.length;
    this.ctx.initBatch(total);
    for (const item of items) {
      const logits = item.logits ? Uint32Array.of(item.tokens.length - 1) : NO_TOKENS;
      const indexes = this.ctx.addToBatch(item.slot, item.position, Uint32Array.from(item.tokens), logits);
      if (item.logits) this.#logitIndex[item.slot] = indexes[0];
    }
    await this.ctx.decodeBatch();
  }

  sample(slots: readonly number[]): Promise<number[]> {
    return Promise.all(slots.map((slot) => this.ctx.sampleToken(this.#logitIndex[slot], this.#samplers[slot])));
  }

  isEndOfGeneration(token: number): boolean {
    return token < 0 || this.isEog(token);
  }

  truncate(slot: number, from: number): number {
    if (from <= 0) {
      this.ctx.disposeSequence(slot);
      return 0;
    }
    if (this.ctx.removeTokenCellsFromSequence(slot, from, -1)) return from;
    this.ctx.disposeSequence(slot);
    return 0;
  }

  /** Copies through a state file on tmpfs: save `from`'s cells, load them into `to`, cut to length. */
  async copyPrefix(from: number, to: number, length: number): Promise<void> {
    const file = join(this.#stateDir, `llm-kv-${process.pid}-${this.#copies++}.bin`);
    try {
      await this.ctx.saveSequenceStateToFile(file, from, NO_TOKENS);
      this.ctx.disposeSequence(to);
      await this.ctx.loadSequenceStateFromFile(file, to, 0);
      if (!this.ctx.removeTokenCellsFromSequence(to, length, -1)) throw new Error(`cannot cut slot ${to} to ${length} tokens`);
    } finally {
      rmSync(file, { force: true });
    }
  }

  dispose(): void {
    for (const sampler of this.#samplers) sampler.dispose();
  }
}

/**
 * The only place that touches node-llama-cpp. Owns the model, one shared context whose
 * sequences are the scheduler's slots (driven through LlamaDecodeRuntime), and a lazily created
 * embedding context.
 */
/** Prompt texts remembered with their tokens, and the longest remembered (≈ 4 MB of text at most). */
const TOKEN_MEMO_ENTRIES = 512;
const TOKEN_MEMO_MAX_CHARS = 8192;

@Injectable()
export class LlamaAdapter {
  readonly #logger = new Logger('Inference');
  #lib!: Lib;
  #llama: NodeLlamaCpp.Llama | null = null;
  #model: NodeLlamaCpp.LlamaModel | null = null;
  #context: NodeLlamaCpp.LlamaContext | null = null;
  #runtime: LlamaDecodeRuntime | null = null;
  readonly #progressListeners = new Set<(fraction: number) => void>();
  #jsonGrammar: Promise<unknown> | null = null;
  #grammarCompiler: GrammarCompiler | null = null;
  /**
   * Tokens of recently seen prompt texts. Clients repeat prompts (retries, cache hits, shared
   * system prompts) and the exact cache's key needs the tokens before it can answer: a cache hit
   * should not pay for the tokenizer. Bounded in entries and in text length.
   */
  readonly #tokenMemo = new LruMap<readonly number[]>(TOKEN_MEMO_ENTRIES);
  #chatWrapper: NodeLlamaCpp.ChatWrapper | null = null;
  #embedding: Promise<NodeLlamaCpp.LlamaEmbeddingContext> | null = null;
  #embedLock: Promise<unknown> = Promise.resolve();
  #otherEmbedding: Promise<{ model: NodeLlamaCpp.LlamaModel; context: NodeLlamaCpp.LlamaEmbeddingContext }> | null = null;
  #descriptor: ModelDescriptor | null = null;
  #bosPrepended = false;

  constructor(private readonly config: AppConfig) {}

  get isLoaded(): boolean {
    return this.#descriptor !== null;
  }

  get descriptor(): ModelDescriptor {
    if (!this.#descriptor) throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading');
    return this.#descriptor;
  }

  /** Calls `listener` with the model load's progress (0..1); returns a function that removes it. */
  onLoadProgress(listener: (fraction: number) => void): () => void {
    this.#progressListeners.add(listener);
    return () => this.#progressListeners.delete(listener);
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
          for (const listener of this.#progressListeners) listener(progress);
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
    const lib = this.#lib;
    // Reserve every sequence id so that nothing else in node-llama-cpp hands one out.
    for (let i = 0; i < this.config.parallelSlots; i++) this.#context.getSequence();
    type Internals = { _ctx: NativeContext; _llama: { _bindings: { AddonSampler: new (m: unknown) => NativeSampler } } };
    type ModelInternals = { _model: unknown };
    const nativeContext = (this.#context as unknown as Internals)._ctx;
    const bindings = (this.#context as unknown as Internals)._llama._bindings;
    const nativeModel = (model as unknown as ModelInternals)._model;
    const eog = [model.tokens.eos, model.tokens.eot].filter((t): t is NodeLlamaCpp.Token => t !== null);
    this.#runtime = new LlamaDecodeRuntime(
      nativeContext,
      () => new bindings.AddonSampler(nativeModel),
      (grammar) =>
        new lib.LlamaGrammarEvaluationState({ model, grammar: grammar as NodeLlamaCpp.LlamaGrammar }) as unknown as { _state: unknown },
      this.config.parallelSlots,
      this.config.batchSize,
      this.#context.contextSize,
      (token) => model.isEogToken(token as NodeLlamaCpp.Token),
      eog,
    );
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
    const model = this.#requireModel();
    if (text.length > TOKEN_MEMO_MAX_CHARS) return model.tokenize(text) as number[];
    let tokens = this.#tokenMemo.get(text);
    if (tokens === undefined) {
      tokens = model.tokenize(text) as number[];
      this.#tokenMemo.set(text, tokens);
    }
    // A copy: callers own what they get, the memo stays intact.
    return [...tokens];
  }

  /** Text of `tokens`; `context` (the tokens just before) lets SentencePiece place spaces right. */
  detokenize(tokens: readonly number[], context?: readonly number[]): string {
    return this.#requireModel().detokenize(tokens as NodeLlamaCpp.Token[], false, context as NodeLlamaCpp.Token[] | undefined);
  }

  /** The engine the scheduler drives; available once loaded. */
  get runtime(): DecodeRuntime {
    if (!this.#runtime) throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading');
    return this.#runtime;
  }

  /** Prompt tokens as evaluated: BOS first when the model wants it. */
  withBos(tokens: readonly number[]): number[] {
    const bos = this.#requireModel().tokens.bos;
    return this.#bosPrepended && bos !== null && tokens[0] !== bos ? [bos, ...tokens] : [...tokens];
  }

  /** Tokens withBos() adds in front of a prompt (BOS), counted in usage. */
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
    // BOS is added by withBos() for every prompt; a template that writes it too would double it.
    if (this.#bosPrepended && tokens[0] === model.tokens.bos) tokens = tokens.slice(1);
    const stop = state.stopGenerationTriggers
      .filter((trigger) => trigger.values.every((v) => typeof v === 'string'))
      .map((trigger) => trigger.values.join(''))
      .filter((s) => s.length > 0);
    return { tokens, stop };
  }

  /**
   * Compiles an output constraint for SamplingParams.constraint: any JSON (`json`) or JSON that
   * matches a schema. Schemas go through the GrammarCompiler: limits first (400
   * `schema_too_complex`), the JSON-schema → GBNF conversion on a worker thread, then the native
   * parse of a size-capped grammar, cached by the schema's hash within a memory bound.
   */
  async grammarFor(format: 'json' | object): Promise<unknown> {
    const llama = this.#llama;
    if (!llama) throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading');
    if (format === 'json') {
      this.#jsonGrammar ??= llama.getGrammarFor('json').catch((err: unknown) => {
        this.#jsonGrammar = null;
        throw err;
      });
      return this.#jsonGrammar;
    }
    this.#grammarCompiler ??= new GrammarCompiler(this.config.schemaLimits, (grammar) => llama.createGrammar({ grammar }));
    return this.#grammarCompiler.compile(format);
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
      limit = usableEmbeddingTokens(limit);
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

  /**
   * Tokenizer of the model that `embed(…, modelPath)` uses (the served model, or the other GGUF,
   * loaded on first use), and the most tokens one embedding input may have.
   */
  async embeddingTokenizer(modelPath?: string): Promise<EmbeddingTokenizer> {
    const model =
      modelPath === undefined || modelPath === this.config.modelPath ? this.#requireModel() : (await this.#otherEmbedder(modelPath)).model;
    const bos = model.tokens.shouldPrependBosToken && model.tokens.bos !== null ? 1 : 0;
    return {
      tokenize: (text) => model.tokenize(text) as number[],
      detokenize: (tokens) => model.detokenize(tokens as NodeLlamaCpp.Token[], false),
      maxTokens: usableEmbeddingTokens(Math.min(model.trainContextSize, 2048)) - bos,
    };
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
    this.#runtime?.dispose();
    this.#runtime = null;
    const other = await this.#otherEmbedding?.catch(() => null);
    this.#otherEmbedding = null;
    await other?.context.dispose();
    await other?.model.dispose();
    await this.#context?.dispose();
    await this.#model?.dispose();
    await this.#llama?.dispose();
    this.#context = this.#model = this.#llama = null;
  }

  #requireModel(): NodeLlamaCpp.LlamaModel {
    if (!this.#model) throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading');
    return this.#model;
  }
}

/**
 * Tokens (BOS included) one embedding input may have in a context of `contextSize`:
 * node-llama-cpp refuses an input that fills the context, and may append an end token.
 */
function usableEmbeddingTokens(contextSize: number): number {
  return contextSize - 2;
}
