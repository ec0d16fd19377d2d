import { Logger } from '@nestjs/common';
import { busyPromptPackTokens, GenerationEvent, measurePromptCost, Scheduler, SchedulerObserver, SchedulerSnapshot, SlotState, SubmitOptions, TextLogprob } from '@app/batching';
import { InferenceErrorCode, InferenceException } from '../inference.exception';
import { ChatMessage, EmbeddingResult, EmbeddingTokenizer, ModelDescriptor } from '../inference.types';
import { EngineOptions, LlamaAdapter } from '../llama.adapter';
import { TokenTextDecoder } from '../token-text.decoder';
import { ToolCallSyntax, ToolDefinition } from '../tools/tool.types';
import { LlamaBackend } from './llama.backend';
import { ModelKind, ModelSpec, SamplingDefaults } from './model.types';
import type { CompletedGeneration, GenerationRequest, PreparedPrompt, StopDetail } from './model.handle';
import { ModelHandle, toUsage } from './model.handle';

/** Scheduler settings every chat model shares (QUEUE_MAX, QUEUE_TIMEOUT_MS, PREFILL_CHUNK, PROMPT_PACK_TOKENS, PROMPT_DRAIN_PACK). */
export interface QueueOptions {
  readonly queueMax: number;
  readonly queueTimeoutMs: number;
  readonly prefillChunk: number;
  /** undefined = by where the model runs (measured at load on a CPU, no limit on a GPU). */
  readonly promptPackTokens?: number;
  /** PROMPT_DRAIN_PACK (SchedulerOptions.drainPack). Default true. */
  readonly drainPack?: boolean;
}

/**
 * Prompt tokens of different requests packed into one step on a CPU at least, and when the cost
 * of a prompt token cannot be measured at load. A CPU step costs a fixed part (reading the
 * weights: about one decode step) plus a part per token; a second prompt of p tokens in the same
 * step delays the first one's token by p tokens' compute and saves the second one the fixed part
 * (110M Q8_0 on 2 zen4 cores: ~7 ms fixed, ~0.9 ms per prompt token). How many more tokens pay
 * depends on the CPU (matrix units make a prompt token 3-4x cheaper): busyPromptPackTokens().
 */
export const CPU_PROMPT_PACK_TOKENS = 16;

/**
 * Measurements of the prompt cost at load before giving up on it (each ~0.2–0.6 s for a 110M
 * model on 2 cores, seconds while something else computes): with two servers loading at once on
 * 2 cores, a first one came back inconclusive and the second did not. Before, that left the
 * server on CPU_PROMPT_PACK_TOKENS without a word in the log.
 */
const PROMPT_COST_ATTEMPTS = 3;

/** What the prompt-cost measurement at load evaluates (any text: only its length matters). */
const CALIBRATION_TEXT = 'Once upon a time there was a little girl named Lily who loved to play in the park with her dog Max every day.';

/** Longest wait at unload/shutdown for cancelled generations to leave the decode loop before the model is freed. */
const IDLE_WAIT_MS = 5000;

/**
 * One loaded model: its adapter (model, context, engine addon, grammars, tokenizer memo) and, for
 * a chat model, its own scheduler over its own slots. Everything a request does with a model
 * goes through here (ModelHandle); the registry creates and frees these.
 */
export class LoadedModel implements ModelHandle {
  readonly #logger = new Logger('Inference');
  readonly #adapter: LlamaAdapter;
  #scheduler: Scheduler | null = null;
  #descriptor: ModelDescriptor | null = null;
  #stopped = false;

  constructor(
    readonly spec: ModelSpec,
    engine: EngineOptions,
    backend: LlamaBackend,
    private readonly queue: QueueOptions,
    private readonly observer: SchedulerObserver,
  ) {
    this.#adapter = new LlamaAdapter(spec, engine, backend);
  }

  get id(): string {
    return this.spec.id;
  }

  get aliases(): readonly string[] {
    return this.spec.aliases;
  }

  get kind(): ModelKind {
    return this.spec.kind;
  }

  get defaults(): SamplingDefaults {
    return this.spec.defaults;
  }

  /** Follows the load (0..1); returns a function that stops it. */
  onLoadProgress(listener: (fraction: number) => void): () => void {
    return this.#adapter.onLoadProgress(listener);
  }

  async load(): Promise<ModelDescriptor> {
    const descriptor = await this.#adapter.load();
    if (this.spec.kind === 'chat') {
      this.#scheduler = new Scheduler(
        this.#adapter.runtime,
        {
          queueMax: this.queue.queueMax,
          queueTimeoutMs: this.queue.queueTimeoutMs,
          prefillChunk: this.queue.prefillChunk,
          drainPack: this.queue.drainPack ?? true,
          // On a GPU a step with more prompt tokens costs about the same: all go at once.
          ...(this.queue.promptPackTokens !== undefined
            ? { promptPackTokens: this.queue.promptPackTokens }
            : descriptor.gpu && descriptor.gpuLayers > 0
              ? {}
              : await this.#cpuPacking()),
        },
        this.observer,
      );
      if (this.#stopped) this.#scheduler.stopAccepting();
      // The slot and queue gauges exist from the load on, not from the first request.
      this.observer.onStateChange?.(this.#scheduler.snapshot());
    }
    this.#descriptor = descriptor;
    return descriptor;
  }

  /**
   * On a CPU, how many prompt tokens share a step when prompts queue (three or more waiting) is
   * measured at load (measurePromptCost: ~0.2 s for a 110M model on 2 cores) rather than fixed:
   * busyPromptPackTokens() keeps one short prompt a step on a CPU where a prompt token costs ~0.9 ms,
   * and packs a few on one with matrix units (0.27 ms), where that was 4.7% / 7.6% more
   * throughput at 4 / 8 streams (docs/PERFORMANCE.md). One or two prompts at a time keep
   * CPU_PROMPT_PACK_TOKENS (their first token first); so does everything when it cannot be measured.
   */
  async #cpuPacking(): Promise<{ promptPackTokens: number; busyPromptPackTokens?: number }> {
    const runtime = this.#adapter.runtime;
    try {
      const started = performance.now();
      const cost = await measurePromptCost(runtime, this.#adapter.tokenize(CALIBRATION_TEXT), { attempts: PROMPT_COST_ATTEMPTS });
      if (!cost) {
        this.#logger.warn(
          `${this.spec.id}: could not tell the cost of a prompt token from a step's (${PROMPT_COST_ATTEMPTS} measurements in ${Math.round(performance.now() - started)} ms, something else computing?); prompts share a step within ${CPU_PROMPT_PACK_TOKENS} tokens (PROMPT_PACK_TOKENS overrides)`,
        );
      } else {
        const tokens = busyPromptPackTokens(cost, runtime.batchSize, CPU_PROMPT_PACK_TOKENS);
        this.#logger.log(
          `${this.spec.id}: a prompt token costs ${cost.perTokenMs.toFixed(3)} ms here (a step ${cost.fixedMs.toFixed(1)} ms more; measured in ${Math.round(performance.now() - started)} ms): ` +
            `prompts of different requests share a step within ${CPU_PROMPT_PACK_TOKENS} tokens, within ${tokens} while three or more wait (PROMPT_PACK_TOKENS overrides)`,
        );
        return { promptPackTokens: CPU_PROMPT_PACK_TOKENS, busyPromptPackTokens: tokens };
      }
    } catch (err) {
      this.#logger.warn(`${this.spec.id}: could not measure the cost of a prompt step (${(err as Error).message}); prompts share a step within ${CPU_PROMPT_PACK_TOKENS} tokens`);
    }
    return { promptPackTokens: CPU_PROMPT_PACK_TOKENS };
  }

  get descriptor(): ModelDescriptor {
    if (!this.#descriptor) throw new InferenceException(InferenceErrorCode.ModelLoading, `Model ${this.spec.id} is still loading; retry shortly`, { headers: { 'Retry-After': '2' } });
    return this.#descriptor;
  }

  /** Slots, queue and KV occupancy (all idle before the load, and for models without slots). */
  get scheduler(): SchedulerSnapshot {
    return (
      this.#scheduler?.snapshot() ?? {
        slots: Array.from({ length: this.spec.kind === 'chat' ? this.spec.slots : 0 }, () => SlotState.Idle),
        busySlots: 0,
        queueDepth: 0,
        queueCapacity: this.queue.queueMax,
        accepting: !this.#stopped,
        kvTokens: 0,
      }
    );
  }

  /** Generations running or waiting for a slot. */
  get busy(): boolean {
    const s = this.#scheduler?.snapshot();
    return !!s && (s.busySlots > 0 || s.queueDepth > 0);
  }

  prepareText(prompt: string, maxTokens: number | undefined, defaultMaxTokens: number | 'fill'): PreparedPrompt {
    this.#requireChat();
    return this.#fit(this.#adapter.tokenize(prompt), [], maxTokens, defaultMaxTokens);
  }

  prepareTokens(tokens: readonly number[], maxTokens: number | undefined, defaultMaxTokens: number | 'fill', param = 'prompt'): PreparedPrompt {
    this.#requireChat();
    this.assertTokens(tokens, param);
    return this.#fit([...tokens], [], maxTokens, defaultMaxTokens);
  }

  assertTokens(tokens: readonly number[], param: string): void {
    const vocab = this.descriptor.vocabularySize;
    const bad = tokens.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
    if (bad >= 0) {
      throw new InferenceException(InferenceErrorCode.InvalidToken, `${param}[${bad}] = ${tokens[bad]} is not a token id of this model (0 to ${vocab - 1})`, { param });
    }
  }

  prepareChat(messages: readonly ChatMessage[], maxTokens: number | undefined, tools: readonly ToolDefinition[] = []): PreparedPrompt {
    this.#requireChat();
    const rendered = this.#adapter.renderChat(messages, tools);
    return this.#fit(rendered.tokens, rendered.stop, maxTokens, 'fill');
  }

  get toolSyntax(): ToolCallSyntax {
    this.#requireChat();
    return this.#adapter.toolSyntax;
  }

  toolConstraint(tools: readonly ToolDefinition[], parallel: boolean): Promise<unknown> {
    this.#requireChat();
    return this.#adapter.toolCallGrammar(tools, parallel);
  }

  constraintFor(format: 'json' | object): Promise<unknown> {
    this.#requireChat();
    return this.#adapter.grammarFor(format);
  }

  tokenize(text: string, options: { readonly special?: boolean } = {}): number[] {
    void this.descriptor;
    return this.#adapter.tokenize(text, options.special === true);
  }

  withSpecialTokens(tokens: readonly number[]): number[] {
    void this.descriptor;
    return this.#adapter.withBos(tokens);
  }

  tokenPieces(tokens: readonly number[], options: { readonly special?: boolean } = {}): (string | number[])[] {
    this.assertTokens(tokens, 'tokens');
    return tokens.map((token, i) => {
      const { text, bytes } = this.#adapter.tokenPiece(token, tokens.slice(Math.max(0, i - 4), i), options.special === true);
      return Buffer.from(text, 'utf8').equals(Buffer.from(bytes)) ? text : bytes;
    });
  }

  countChatTokens(messages: readonly ChatMessage[], tools: readonly ToolDefinition[] = []): number {
    this.#requireChat();
    return this.#adapter.withBos(this.#adapter.renderChat(messages, tools).tokens).length;
  }

  detokenize(tokens: readonly number[], options: { readonly special?: boolean } = {}): string {
    this.assertTokens(tokens, 'tokens');
    return this.#adapter.detokenize(tokens, undefined, options.special === true);
  }

  /**
   * Schedules a generation; iterate to run it. Errors (full queue, draining) surface on the
   * first `next()`. Tokens become text here, off the scheduler: UTF-8 reassembly and stop
   * strings; a stop string ends the request and frees its slot at once.
   */
  generate(request: GenerationRequest, options: SubmitOptions = {}): AsyncIterable<GenerationEvent> {
    this.#requireChat();
    const scheduler = this.#scheduler as Scheduler;
    const adapter = this.#adapter;
    const stops = [...request.prompt.templateStop, ...(request.stop ?? [])];
    const job = { prompt: request.prompt.tokens, maxTokens: request.prompt.maxTokens, sampling: request.sampling };
    const special = request.specialTokens === true;
    return {
      [Symbol.asyncIterator]: async function* (): AsyncGenerator<GenerationEvent> {
        const decoder = new TokenTextDecoder((tokens, context) => adapter.detokenize(tokens, context, special), stops);
        let received = 0;
        let cached = 0;
        let unreported = 0;
        // Log-probabilities of the tokens behind text not yet emitted, and the tokens before them.
        let logprobs: TextLogprob[] = [];
        // The tokens before each one, as the text decoder sees them (none before the first).
        let recent: number[] = [];
        for await (const event of scheduler.submit(job, options)) {
          if (event.kind === 'token') {
            received++;
            cached = event.cachedPromptTokens ?? cached;
            unreported++;
            if (event.logprobs) {
              const piece = (token: number) => adapter.tokenPiece(token, recent, special);
              const own = piece(event.token);
              logprobs.push({
                token: event.token,
                text: own.text,
                bytes: own.bytes,
                logprob: event.logprobs.logprob,
                top: event.logprobs.top.map((t) => ({ token: t.token, logprob: t.logprob, ...piece(t.token) })),
              });
              recent = [...recent.slice(-3), event.token];
            }
            const text = decoder.push(event.token);
            if (text) {
              yield logprobs.length ? { kind: 'text', text, tokens: unreported, logprobs } : { kind: 'text', text, tokens: unreported };
              unreported = 0;
              logprobs = [];
            }
            if (decoder.stopped) {
              // Leaving the loop cancels the scheduler's stream: the slot is freed at the next step.
              const done: GenerationEvent & StopDetail = { kind: 'done', finishReason: 'stop', promptTokens: job.prompt.length, completionTokens: received, cachedPromptTokens: cached, stopSequence: decoder.matchedStop };
              yield done;
              return;
            }
          } else {
            const rest = decoder.flush();
            if (rest) yield logprobs.length ? { kind: 'text', text: rest, tokens: unreported, logprobs } : { kind: 'text', text: rest, tokens: unreported };
            yield event;
          }
        }
      },
    };
  }

  async complete(request: GenerationRequest, options: SubmitOptions = {}): Promise<CompletedGeneration> {
    let text = '';
    for await (const event of this.generate(request, options)) {
      if (event.kind === 'text') text += event.text;
      else return { text, finishReason: event.finishReason, usage: toUsage(event), cachedPromptTokens: event.cachedPromptTokens };
    }
    throw new InferenceException(InferenceErrorCode.GenerationFailed, 'Generation ended without a result');
  }

  embed(texts: readonly (string | readonly number[])[]): Promise<EmbeddingResult> {
    this.#requireKind(['chat', 'embedding'], 'embeddings');
    return this.#adapter.embed(texts);
  }

  embeddingTokenizer(): EmbeddingTokenizer {
    this.#requireKind(['chat', 'embedding'], 'embeddings');
    return this.#adapter.embeddingTokenizer();
  }

  rank(query: string, documents: readonly string[]): Promise<number[]> {
    this.#requireKind(['rerank'], 'ranking');
    return this.#adapter.rank(query, documents);
  }

  /** Stops admitting generations (drain, unload); running ones go on. */
  stopAccepting(): void {
    this.#stopped = true;
    this.#scheduler?.stopAccepting();
  }

  /** Resolves when no generation runs or waits. */
  whenIdle(): Promise<void> {
    return this.#scheduler?.whenIdle() ?? Promise.resolve();
  }

  /**
   * Frees the model once its generations are done. Freeing the native context under a decode in
   * flight crashes the process, so this waits for the scheduler to be idle (bounded: the
   * generations left are cancelled ones, which leave within a step).
   */
  async dispose(): Promise<void> {
    this.stopAccepting();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.whenIdle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, IDLE_WAIT_MS)))]).finally(() => clearTimeout(timer));
    await this.#adapter.dispose().catch((err: unknown) => this.#logger.warn(`dispose of ${this.spec.id} failed: ${String(err)}`));
    this.#scheduler = null;
    this.#descriptor = null;
  }

  #requireChat(): void {
    this.#requireKind(['chat'], 'text generation');
  }

  #requireKind(kinds: readonly ModelKind[], what: string): void {
    if (!kinds.includes(this.spec.kind)) {
      throw new InferenceException(InferenceErrorCode.ModelKindMismatch, `Model ${this.spec.id} is a${this.spec.kind === 'embedding' ? 'n' : ''} ${this.spec.kind} model; it cannot be used for ${what}`, { param: 'model' });
    }
    void this.descriptor;
  }

  #fit(text: number[], templateStop: readonly string[], maxTokens: number | undefined, fallback: number | 'fill'): PreparedPrompt {
    const { contextSize } = this.descriptor;
    const tokens = this.#adapter.withBos(text);
    const promptTokens = tokens.length;
    if (promptTokens >= contextSize) {
      throw new InferenceException(
        InferenceErrorCode.ContextLengthExceeded,
        `The prompt has ${promptTokens} tokens but the context holds ${contextSize} tokens per request ` +
          `(prompt + completion); shorten the prompt`,
        { param: 'prompt' },
      );
    }
    const room = contextSize - promptTokens;
    const resolved = maxTokens ?? (fallback === 'fill' ? room : Math.min(fallback, room));
    if (resolved > room) {
      throw new InferenceException(
        InferenceErrorCode.ContextLengthExceeded,
        `This model's context holds ${contextSize} tokens per request, but ${promptTokens + resolved} were requested ` +
          `(${promptTokens} in the prompt, ${resolved} for the completion); lower max_tokens to at most ${room}`,
        { param: 'max_tokens' },
      );
    }
    return { tokens, promptTokens, maxTokens: resolved, templateStop };
  }
}
