import { Inject, Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown, Optional } from '@nestjs/common';
import { AppConfig } from '@app/common';
import {
  FinishReason,
  GenerationEvent,
  SamplingParams,
  Scheduler,
  SchedulerSnapshot,
  SlotState,
  SubmitOptions,
  TextLogprob,
} from '@app/batching';
import type { RequestOutcome, SchedulerObserver } from '@app/batching';
import { InferenceErrorCode, InferenceException } from './inference.exception';
import { ChatMessage, EmbeddingResult, EmbeddingTokenizer, ModelDescriptor } from './inference.types';
import { ToolCallSyntax, ToolDefinition } from './tools/tool.types';
import { LlamaAdapter } from './llama.adapter';
import { TokenTextDecoder } from './token-text.decoder';

/** Longest wait at shutdown for cancelled generations to leave the decode loop before the model is freed. */
const SHUTDOWN_IDLE_WAIT_MS = 5000;

/** A prompt checked against the context: tokens ready for the scheduler. */
export interface PreparedPrompt {
  /** Tokens to evaluate, BOS included. */
  readonly tokens: number[];
  /** Prompt tokens as billed (= tokens.length). */
  readonly promptTokens: number;
  readonly maxTokens: number;
  /** Stop strings required by the chat template (added to the request's own). */
  readonly templateStop: readonly string[];
}

export interface GenerationRequest {
  readonly prompt: PreparedPrompt;
  readonly sampling: SamplingParams;
  readonly stop?: readonly string[];
  /**
   * Control tokens come out as their text (default false: they have none). For tool calling,
   * whose syntax may use them (Mistral's `[TOOL_CALLS]`).
   */
  readonly specialTokens?: boolean;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface CompletedGeneration {
  readonly text: string;
  readonly finishReason: FinishReason;
  readonly usage: Usage;
  readonly cachedPromptTokens: number;
}

export type ModelState = 'loading' | 'ready' | 'failed';

/** On a `done` event of generate(): the stop string (template's or request's) that ended the text, if one did. */
export interface StopDetail {
  readonly stopSequence?: string;
}

/**
 * Optional provider: metrics (and anything else) that want the scheduler's events register a
 * SchedulerObserver under this token.
 */
export const SCHEDULER_OBSERVER = Symbol('SCHEDULER_OBSERVER');

/**
 * What the API layer calls: prompt preparation (tokenise, template, context check), scheduled
 * generation as a stream, and embeddings. Model loading starts with the application and runs
 * in the background so that the HTTP server (and its probes) answer while it loads.
 */
@Injectable()
export class InferenceService implements OnApplicationBootstrap, OnApplicationShutdown {
  readonly #logger = new Logger('Inference');
  #scheduler: Scheduler | null = null;
  readonly #observer: SchedulerObserver;
  #generatedTokens = 0;
  #draining = false;
  #state: ModelState = 'loading';
  #ready: Promise<ModelDescriptor> | null = null;
  #failure: Error | null = null;

  constructor(
    private readonly adapter: LlamaAdapter,
    private readonly config: AppConfig,
    @Optional() @Inject(SCHEDULER_OBSERVER) observer?: SchedulerObserver,
  ) {
    const external = observer ?? {};
    // Bind explicitly: the observer is usually a class instance, whose hooks live on its prototype.
    const bound = (name: keyof SchedulerObserver) => (external[name] as ((...a: unknown[]) => void) | undefined)?.bind(external);
    this.#observer = {
      onQueueWait: bound('onQueueWait'),
      onRejected: bound('onRejected'),
      onStateChange: bound('onStateChange'),
      onFirstToken: bound('onFirstToken'),
      onInterToken: bound('onInterToken'),
      onStep: bound('onStep'),
      onFinish: (outcome: RequestOutcome) => {
        this.#generatedTokens += outcome.completionTokens;
        external.onFinish?.call(external, outcome);
      },
    };
  }

  onApplicationBootstrap(): void {
    // Start loading with the app; whoever needs the model awaits whenReady().
    this.whenReady().catch((err: Error) => this.#logger.error(`Model load failed: ${err.message}`));
  }

  get state(): ModelState {
    return this.#state;
  }

  get scheduler(): SchedulerSnapshot {
    return (
      this.#scheduler?.snapshot() ?? {
        slots: Array.from({ length: this.config.parallelSlots }, () => SlotState.Idle),
        busySlots: 0,
        queueDepth: 0,
        queueCapacity: this.config.queueMax,
        accepting: false,
        kvTokens: 0,
      }
    );
  }

  /** Follows the model load (0..1), e.g. for a progress bar; returns a function that stops it. */
  onLoadProgress(listener: (fraction: number) => void): () => void {
    return this.adapter.onLoadProgress(listener);
  }

  /** Starts loading (once) and resolves when the model is ready; rejects with the load error. */
  whenReady(): Promise<ModelDescriptor> {
    this.#ready ??= this.adapter.load().then(
      (descriptor) => {
        this.#scheduler = new Scheduler(
          this.adapter.runtime,
          {
            queueMax: this.config.queueMax,
            queueTimeoutMs: this.config.queueTimeoutMs,
            prefillChunk: this.config.prefillChunk,
          },
          this.#observer,
        );
        if (this.#draining) this.#scheduler.stopAccepting();
        this.#state = 'ready';
        return descriptor;
      },
      (err: Error) => {
        this.#state = 'failed';
        this.#failure = err;
        throw err;
      },
    );
    return this.#ready;
  }

  get model(): ModelDescriptor {
    this.#assertReady();
    return this.adapter.descriptor;
  }

  /** Accepts the served id (and its file name); anything else is a 404 like OpenAI's. */
  assertModel(requested: string | undefined): void {
    const { id, path } = this.model;
    if (requested === undefined || requested === id || requested === path.split('/').pop()) return;
    throw new InferenceException(
      InferenceErrorCode.ModelNotFound,
      `The model '${requested}' does not exist; this server serves '${id}'`,
      { param: 'model' },
    );
  }

  prepareText(prompt: string, maxTokens: number | undefined, defaultMaxTokens: number | 'fill'): PreparedPrompt {
    this.#assertReady();
    return this.#fit(this.adapter.tokenize(prompt), [], maxTokens, defaultMaxTokens);
  }

  /** A prompt given as token ids (OpenAI's token prompts); each must be in the vocabulary. */
  prepareTokens(tokens: readonly number[], maxTokens: number | undefined, defaultMaxTokens: number | 'fill', param = 'prompt'): PreparedPrompt {
    this.assertTokens(tokens, param);
    return this.#fit([...tokens], [], maxTokens, defaultMaxTokens);
  }

  /** Throws a 400 naming `param` unless every id is a token of the model (llama.cpp aborts on others). */
  assertTokens(tokens: readonly number[], param: string): void {
    this.#assertReady();
    const vocab = this.adapter.descriptor.vocabularySize;
    const bad = tokens.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
    if (bad >= 0) {
      throw new InferenceException(InferenceErrorCode.InvalidToken, `${param}[${bad}] = ${tokens[bad]} is not a token id of this model (0 to ${vocab - 1})`, { param });
    }
  }

  prepareChat(messages: readonly ChatMessage[], maxTokens: number | undefined, tools: readonly ToolDefinition[] = []): PreparedPrompt {
    this.#assertReady();
    const rendered = this.adapter.renderChat(messages, tools);
    return this.#fit(rendered.tokens, rendered.stop, maxTokens, 'fill');
  }

  /** Prompt tokens of a chat (template, tools, BOS) without the context check: what prepareChat would evaluate. */
  countChatTokens(messages: readonly ChatMessage[], tools: readonly ToolDefinition[] = []): number {
    this.#assertReady();
    return this.adapter.withBos(this.adapter.renderChat(messages, tools).tokens).length;
  }

  /** How the served model writes function calls: its chat template's syntax, or the generic one. */
  get toolSyntax(): ToolCallSyntax {
    this.#assertReady();
    return this.adapter.toolSyntax;
  }

  /** A compiled constraint that makes the model call `tools` (see SamplingParams.constraint). */
  toolConstraint(tools: readonly ToolDefinition[], parallel: boolean): Promise<unknown> {
    this.#assertReady();
    return this.adapter.toolCallGrammar(tools, parallel);
  }

  /**
   * Text of token ids (e.g. to echo a token prompt); every id must be a token of the model.
   * `special`: control tokens (BOS, `<|im_end|>`) come out as their text instead of nothing.
   */
  detokenize(tokens: readonly number[], options: { special?: boolean } = {}): string {
    this.assertTokens(tokens, 'tokens');
    return this.adapter.detokenize(tokens, undefined, options.special === true);
  }

  /**
   * Each token's text as it appears after the tokens before it (so the pieces join into the
   * detokenized text), or its bytes when the token is part of a UTF-8 character (byte fallback).
   */
  tokenPieces(tokens: readonly number[], options: { special?: boolean } = {}): (string | number[])[] {
    this.assertTokens(tokens, 'tokens');
    return tokens.map((token, i) => {
      const { text, bytes } = this.adapter.tokenPiece(token, tokens.slice(Math.max(0, i - 4), i), options.special === true);
      return Buffer.from(text, 'utf8').equals(Buffer.from(bytes)) ? text : bytes;
    });
  }

  /** Tokens as evaluated: BOS first when the model adds one (llama.cpp's add_special). */
  withSpecialTokens(tokens: readonly number[]): number[] {
    this.#assertReady();
    return this.adapter.withBos(tokens);
  }

  /**
   * Schedules a generation; iterate to run it. Errors (full queue, draining) surface on the
   * first `next()`. Tokens become text here, off the scheduler: UTF-8 reassembly and stop
   * strings; a stop string ends the request and frees its slot at once.
   */
  generate(request: GenerationRequest, options: SubmitOptions = {}): AsyncIterable<GenerationEvent> {
    this.#assertReady();
    const scheduler = this.#scheduler as Scheduler;
    const adapter = this.adapter;
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

  /** Runs a generation to the end and returns the whole text. */
  async complete(request: GenerationRequest, options: SubmitOptions = {}): Promise<CompletedGeneration> {
    let text = '';
    for await (const event of this.generate(request, options)) {
      if (event.kind === 'text') text += event.text;
      else return { text, finishReason: event.finishReason, usage: toUsage(event), cachedPromptTokens: event.cachedPromptTokens };
    }
    throw new InferenceException(InferenceErrorCode.GenerationFailed, 'Generation ended without a result');
  }

  /** A compiled constraint for SamplingParams.constraint: any JSON, or JSON matching `schema`. */
  constraintFor(format: 'json' | object): Promise<unknown> {
    this.#assertReady();
    return this.adapter.grammarFor(format);
  }

  /** Embeds with the served model, or with the GGUF at `modelPath` (loaded on first use). */
  embed(texts: readonly (string | readonly number[])[], options: { modelPath?: string } = {}): Promise<EmbeddingResult> {
    this.#assertReady();
    return this.adapter.embed(texts, options.modelPath);
  }

  /** Tokenizer of the model that `embed(texts, { modelPath })` uses. */
  embeddingTokenizer(options: { modelPath?: string } = {}): Promise<EmbeddingTokenizer> {
    this.#assertReady();
    return this.adapter.embeddingTokenizer(options.modelPath);
  }

  /** Tokens generated since start, aborted generations included. */
  get generatedTokens(): number {
    return this.#generatedTokens;
  }

  /** Tokens of `text` (no BOS); `special`: control-token texts such as `<s>` become those tokens. */
  tokenize(text: string, options: { special?: boolean } = {}): number[] {
    this.#assertReady();
    return this.adapter.tokenize(text, options.special === true);
  }

  /** Tokens held in the KV cache across all slots (0 before the model is loaded). */
  get kvCacheTokens(): number {
    return this.#scheduler?.snapshot().kvTokens ?? 0;
  }

  /** True once drain() or shutdown stopped admitting work: readiness reports "draining". */
  get draining(): boolean {
    return this.#draining;
  }

  /** Stops admitting work; resolves when running generations have finished. */
  async drain(): Promise<void> {
    this.#draining = true;
    this.#scheduler?.stopAccepting();
    await this.#scheduler?.whenIdle();
  }

  async onApplicationShutdown(): Promise<void> {
    this.#draining = true;
    this.#scheduler?.stopAccepting();
    await this.#ready?.catch(() => undefined);
    // Freeing the native context under a decode in flight crashes the process (SIGSEGV). By now
    // the HTTP server is closed, so the generations left are cancelled within one step.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#scheduler?.whenIdle(),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, SHUTDOWN_IDLE_WAIT_MS))),
    ]).finally(() => clearTimeout(timer));
    await this.adapter.dispose().catch((err: unknown) => this.#logger.warn(`dispose failed: ${String(err)}`));
  }

  #fit(text: number[], templateStop: readonly string[], maxTokens: number | undefined, fallback: number | 'fill'): PreparedPrompt {
    const { contextSize } = this.adapter.descriptor;
    const tokens = this.adapter.withBos(text);
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

  #assertReady(): void {
    if (this.#state === 'ready') return;
    if (this.#state === 'failed') {
      throw new InferenceException(InferenceErrorCode.ModelLoadFailed, `Model failed to load: ${this.#failure?.message}`);
    }
    throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading; retry shortly', {
      headers: { 'Retry-After': '2' },
    });
  }
}

export function toUsage(done: { promptTokens: number; completionTokens: number }): Usage {
  return {
    prompt_tokens: done.promptTokens,
    completion_tokens: done.completionTokens,
    total_tokens: done.promptTokens + done.completionTokens,
  };
}
