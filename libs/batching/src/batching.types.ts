/**
 * Lifecycle of one KV-cache slot (a sequence of the shared context), in the manner of llama.cpp's
 * server (SLOT_STATE_*). Every change goes through the scheduler's one transition method, which
 * refuses any move not listed in SLOT_TRANSITIONS.
 */
export enum SlotState {
  /** No request; the KV cells stay for prefix reuse. */
  Idle = 'idle',
  /**
   * Has a request whose prompt prefix another slot is evaluating right now: it waits for that
   * slot's KV to copy it instead of evaluating the same tokens in parallel (SLOT_STATE_WAIT_OTHER).
   */
  WaitOther = 'wait_other',
  /** Evaluating the prompt, in chunks, between decode steps of the others. */
  Prefill = 'prefill',
  /** Generating: one token per step. */
  Decode = 'decode',
  /** Cancelled (client gone, deadline, failure) while it may be in a batch; freed at the next step boundary. */
  Draining = 'draining',
}

/** The only slot-state changes the scheduler makes; anything else is a bug and throws. */
export const SLOT_TRANSITIONS: Readonly<Record<SlotState, readonly SlotState[]>> = {
  [SlotState.Idle]: [SlotState.Prefill, SlotState.WaitOther],
  [SlotState.WaitOther]: [SlotState.Prefill, SlotState.Draining],
  // Idle: the first sampled token ended it (end of generation, or maxTokens 1).
  [SlotState.Prefill]: [SlotState.Decode, SlotState.Idle, SlotState.Draining],
  [SlotState.Decode]: [SlotState.Decode, SlotState.Idle, SlotState.Draining],
  [SlotState.Draining]: [SlotState.Idle],
};

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
  /**
   * Evaluates all items in one call; items arrive sorted by slot. Resolves with what the engine
   * can tell about the call (its own compute time, the threads it used), so that the scheduler
   * can report the per-step host overhead (everything else in a step).
   */
  decode(items: readonly BatchItem[]): Promise<DecodeReport | void>;
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
  /**
   * Optional: steps back to back without returning to the scheduler between them, like
   * llama.cpp's server loop (the engine addon runs them on its own thread). The first step is
   * `items`; after each step every item with logits whose slot goes on (a token was sampled, it
   * does not end generation unless its plan says to ignore that, and its budget is not spent)
   * is a one-token decode item of the next step. The run ends when no item goes on, after a step
   * with an item without logits (the scheduler owns prompt chunks), or at the first step boundary
   * after interrupt(). `onStep` gets each step, in order, while the next one already computes;
   * sampledLogprobs() answers for that step inside it. Rejects when a step fails.
   */
  run?(items: readonly BatchItem[], plans: readonly RunPlan[], onStep: (step: RunStep) => void): Promise<void>;
  /** Ends a run in flight after its current step (no-op otherwise). Comes with run. */
  interrupt?(): void;
  /**
   * Optional, with run: hands the run in flight more prompts, each a whole prompt (an item with
   * logits, one plan each) of a slot that is not in the run. The run takes them in at its next
   * step boundaries, oldest first, as many a step as fit within `packTokens` prompt tokens (the
   * first always goes) and the batch, after dropping the slot's KV cells from the item's position
   * on; each then goes on like the run's other items and is reported in its onStep. Returns false
   * when there is no run or it is ending: nothing was taken, and the runtime is the caller's.
   * A prompt fed and never reported was not evaluated and its slot's cells from its position on
   * may or may not be gone: the caller truncates that slot again.
   */
  feed?(items: readonly BatchItem[], plans: readonly RunPlan[], packTokens: number): boolean;
}

/** How far a run may take an item with logits (one per such item, in item order). */
export interface RunPlan {
  /** Tokens the slot may still sample, this step's included (>= 1). */
  readonly budget: number;
  /** An end-of-generation token ends the slot's generation (false with ignoreEos). */
  readonly stopOnEog: boolean;
}

/** One step of a run as the runtime reports it. */
export interface RunStep {
  readonly items: readonly BatchItem[];
  /** The token sampled for each item with logits, in item order (-1 = none). */
  readonly sampled: readonly number[];
  readonly report: DecodeReport;
  /** When the step (decode and sampling) ended, on performance.now()'s clock. */
  readonly doneAt: number;
  /**
   * The run ends with this step and the runtime is already free for the next run (which may
   * start before run()'s promise settles). Optional: without it, the next run waits for the
   * promise.
   */
  readonly final?: boolean;
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

/** What a runtime knows about one decode call. */
export interface DecodeReport {
  /** Milliseconds the engine itself computed (llama_decode). */
  readonly computeMs: number;
  /** CPU threads the call ran on. */
  readonly threads?: number;
  /** Throwaway tokens the engine added to close holes between busy slots (not in the items). */
  readonly filledTokens?: number;
}

/** One step of the loop as the observer sees it. */
export interface StepStats {
  /** Tokens evaluated by the decode call. */
  readonly tokens: number;
  /** Slots (sequences) in the decode call. */
  readonly sequences: number;
  /** Items of the call that carry more than one token (prompts or prompt chunks); the others decode one token each. */
  readonly prompts: number;
  /** Wall time of the decode call as the loop saw it (dispatch to completion), ms. */
  readonly ms: number;
  /** Time the engine computed inside the call, when the runtime reports it, ms. */
  readonly computeMs?: number;
  /** CPU threads the call ran on, when the runtime reports it. */
  readonly threads?: number;
  /** Throwaway tokens the engine added to close holes between busy slots, when it reports them. */
  readonly filledTokens?: number;
  /**
   * Everything in the step that is not engine compute, when this step followed the previous one
   * without a pause (queue empty, prefix copy): sampling, the loop's own work, dispatch and
   * completion latency. What decides throughput when a decode takes a few milliseconds (GPU).
   */
  readonly hostMs?: number;
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
