/** Lifecycle of one KV-cache slot (a sequence of the shared context). */
export enum SlotState {
  Idle = 'idle',
  /** Evaluating the prompt. */
  Prefill = 'prefill',
  /** Generating tokens. */
  Decode = 'decode',
  /** Finished or cancelled, waiting for the runtime to let go of the sequence. */
  Draining = 'draining',
}

/** Per-request sampling settings; every field is optional and falls back to the runtime's default. */
export interface SamplingParams {
  /** 0 = greedy. */
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  seed?: number;
  /** Penalty on repeated tokens (1 = off). */
  repeatPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** Keep generating past end-of-generation tokens until max tokens (benchmarks, tests). */
  ignoreEos?: boolean;
}

/** One generation as the scheduler sees it: tokens in, text out. No HTTP, no templates. */
export interface GenerationJob {
  /** Prompt tokens, already tokenised (and templated) by the caller. */
  readonly prompt: readonly number[];
  readonly maxTokens: number;
  readonly sampling: SamplingParams;
  /** Text sequences that end generation; they are not part of the output. */
  readonly stop: readonly string[];
}

export type FinishReason = 'stop' | 'length' | 'abort';

export type GenerationEvent =
  | { readonly kind: 'text'; readonly text: string; readonly tokens: number }
  | {
      readonly kind: 'done';
      readonly finishReason: FinishReason;
      readonly promptTokens: number;
      readonly completionTokens: number;
      /** Prompt tokens that were already in the slot's KV cache and were not evaluated again. */
      readonly cachedPromptTokens: number;
    };

/**
 * What the scheduler drives: N slots that can each run one generation at a time. The inference
 * library implements it over node-llama-cpp; unit tests implement it with a fake.
 */
export interface SlotRuntime {
  readonly slotCount: number;
  /**
   * Runs one job on a slot. Must stop promptly when `signal` aborts and end with one `done`
   * event. `onState` reports prefill → decode transitions.
   */
  run(slot: number, job: GenerationJob, signal: AbortSignal, onState: (state: SlotState) => void): AsyncIterable<GenerationEvent>;
  /** How many leading tokens of `prompt` the slot already holds in its KV cache (0 if unknown). */
  cachedPrefixLength?(slot: number, prompt: readonly number[]): number;
}

/** Per-submission options. */
export interface SubmitOptions {
  /** Cancels the request wherever it is: in the queue or generating. */
  signal?: AbortSignal;
  /** Higher runs first; equal priorities are served in arrival order. Default 0. */
  priority?: number;
  /** Absolute time (ms since epoch) after which the request is cancelled. */
  deadline?: number;
}

export interface SchedulerSnapshot {
  readonly slots: readonly SlotState[];
  readonly busySlots: number;
  readonly queueDepth: number;
  readonly queueCapacity: number;
  readonly accepting: boolean;
}
