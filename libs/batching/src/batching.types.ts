/** Lifecycle of one KV-cache slot (a sequence of the shared context). */
export enum SlotState {
  Idle = 'idle',
  /** Evaluating the prompt, in chunks, between decode steps of the others. */
  Prefill = 'prefill',
  /** Generating: one token per step. */
  Decode = 'decode',
  /** Finished or cancelled while a batch was in flight; freed at the end of the step. */
  Draining = 'draining',
}

/** Per-request sampling settings; every field is optional. */
export interface SamplingParams {
  /** 0 = greedy. Default 0. */
  temperature?: number;
  /** Default 1 (off). */
  topP?: number;
  /** Default 40, like llama.cpp's server; 0 = off. */
  topK?: number;
  /** Default 0 (off). */
  minP?: number;
  /** Fixed seed: the same request gives the same output. Default: random per request. */
  seed?: number;
  /** Penalty on repeated tokens (1 = off). Default 1. */
  repeatPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** Keep generating past end-of-generation tokens until max tokens (benchmarks, tests). */
  ignoreEos?: boolean;
  /**
   * Output constraint (a compiled grammar) created by the runtime's owner; the scheduler only
   * passes it to DecodeRuntime.configure.
   */
  constraint?: unknown;
  /**
   * Added to the logits of these token ids before sampling (OpenAI's logit_bias: -100 bans a
   * token, +100 all but forces it). Default none.
   */
  logitBias?: ReadonlyMap<number, number>;
  /**
   * Report the log-probability of each sampled token and of the `logprobs` most likely
   * alternatives (0 = the sampled token only). Default: not reported.
   */
  logprobs?: number;
}

/** One alternative token and its log-probability. */
export interface TokenLogprob {
  readonly token: number;
  readonly logprob: number;
}

/**
 * Log-probabilities of one sampled token: log-softmax of the model's raw logits over the whole
 * vocabulary (before temperature, top-k/p, penalties, bias and grammar), so they describe the
 * model, not the sampler.
 */
export interface SampledLogprobs {
  readonly logprob: number;
  /** Most likely tokens first. */
  readonly top: readonly TokenLogprob[];
}

/** One generation as the scheduler sees it: tokens in, tokens out. No HTTP, no text, no templates. */
export interface GenerationJob {
  /** Prompt tokens, already tokenised and templated by the caller (BOS included if the model wants it). */
  readonly prompt: readonly number[];
  readonly maxTokens: number;
  readonly sampling: SamplingParams;
}

export type FinishReason = 'stop' | 'length' | 'abort';

/** What the scheduler streams for one request. */
export type TokenEvent =
  /** `cachedPromptTokens` rides on the first token: prompt tokens served from a KV cache. */
  | { readonly kind: 'token'; readonly token: number; readonly cachedPromptTokens?: number; readonly logprobs?: SampledLogprobs }
  | {
      readonly kind: 'done';
      /** `stop` = end-of-generation token. */
      readonly finishReason: FinishReason;
      readonly promptTokens: number;
      readonly completionTokens: number;
      /** Prompt tokens that were already in a KV cache (this slot's, or copied from another) and were not evaluated again. */
      readonly cachedPromptTokens: number;
    };

/** What the inference layer streams to the API: text instead of tokens. */
export type GenerationEvent =
  | {
      readonly kind: 'text';
      readonly text: string;
      readonly tokens: number;
      /** When requested (SamplingParams.logprobs): one entry per token behind this text. */
      readonly logprobs?: readonly TextLogprob[];
    }
  | Extract<TokenEvent, { kind: 'done' }>;

/** A sampled token's log-probabilities with the tokens' text, as the API layer shows them. */
export interface TextLogprob {
  readonly token: number;
  readonly text: string;
  /** The token's own bytes (a token may hold part of a UTF-8 character). */
  readonly bytes: readonly number[];
  readonly logprob: number;
  readonly top: readonly { readonly token: number; readonly text: string; readonly bytes: readonly number[]; readonly logprob: number }[];
}

/** Consecutive tokens of one slot, evaluated in one decode call with the other slots' items. */
export interface BatchItem {
  readonly slot: number;
  readonly tokens: readonly number[];
  /** KV position of tokens[0]. */
  readonly position: number;
  /** Whether the logits of the last token are needed (to sample from). */
  readonly logits: boolean;
}

/**
 * The engine primitives the scheduler drives, one batch per step like llama.cpp's server. The
 * inference library implements it over llama.cpp; unit tests implement it with a fake.
 * The scheduler never calls two of these at once.
 */
export interface DecodeRuntime {
  readonly slotCount: number;
  /** Most tokens one decode call takes. */
  readonly batchSize: number;
  /** KV cells per slot. */
  readonly contextSize: number;
  /** Prepares the slot's sampler for a new job (sampling settings, penalty history). */
  configure(slot: number, sampling: SamplingParams, prompt: readonly number[]): void;
  /** Evaluates all items in one call; items arrive sorted by slot. */
  decode(items: readonly BatchItem[]): Promise<void>;
  /** Samples the next token of each slot from its last item's logits (same order as `slots`). */
  sample(slots: readonly number[]): Promise<number[]>;
  /**
   * Log-probabilities of the token the last `sample` drew for `slot`, when its job asked for
   * them (SamplingParams.logprobs). Optional: a runtime without it reports none.
   */
  sampledLogprobs?(slot: number): SampledLogprobs | undefined;
  isEndOfGeneration(token: number): boolean;
  /** Drops the slot's KV cells from position `from` on; returns how many cells it keeps (`from`, or 0 if it had to clear the slot). */
  truncate(slot: number, from: number): number;
  /**
   * Makes `to` hold the first `length` KV cells of `from` (its own cells are dropped first).
   * Optional: without it, shared prefixes are prefilled by each slot.
   */
  copyPrefix?(from: number, to: number, length: number): Promise<void>;
}

/** Per-submission options. */
export interface SubmitOptions {
  /** Cancels the request wherever it is: in the queue or generating. */
  signal?: AbortSignal;
  /** Higher runs first; equal priorities are served in arrival order. Default 0. */
  priority?: number;
  /** Absolute time (ms since epoch) after which the request is cancelled with 504. */
  deadline?: number;
}

export interface SchedulerSnapshot {
  readonly slots: readonly SlotState[];
  readonly busySlots: number;
  readonly queueDepth: number;
  readonly queueCapacity: number;
  readonly accepting: boolean;
  /** KV cells holding tokens, over all slots (idle slots keep theirs for prefix reuse). */
  readonly kvTokens: number;
}
