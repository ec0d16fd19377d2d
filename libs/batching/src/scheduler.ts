import { AsyncResource } from 'node:async_hooks';
import { Logger } from '@nestjs/common';
import { debugEnabled } from '@app/common';
import { AsyncChannel } from './async.channel';
import { BatchingErrorCode, BatchingException } from './batching.exception';
import {
  BatchItem,
  DecodeReport,
  DecodeRuntime,
  FinishReason,
  GenerationJob,
  RunPlan,
  RunStep,
  SchedulerSnapshot,
  SLOT_TRANSITIONS,
  SlotState,
  StepStats,
  SubmitOptions,
  TokenEvent,
} from './batching.types';
import { BoundedPriorityQueue } from './bounded-priority.queue';

/** Scheduler limits and tuning. */
export interface SchedulerOptions {
  /** Requests that may wait for a slot; one more gets 429. Default 64. */
  queueMax?: number;
  /** Longest wait for a slot in ms before 503. Default 30,000. */
  queueTimeoutMs?: number;
  /**
   * Most tokens of a long prompt evaluated per step while other slots are generating: bounds the
   * pause a long prompt causes to running streams (their inter-token latency). Prompts that fit
   * in one chunk are not held back, and with no stream running a prompt takes the whole batch.
   * Default 128.
   */
  prefillChunk?: number;
  /**
   * Prompt tokens of different requests evaluated together in one step. The oldest waiting short
   * prompt always goes (then the oldest long one, by chunks); another joins only while the step's
   * prompt tokens stay within this. Where prefill is compute-bound (a CPU) every prompt added to a
   * step delays the first token of the others in it: evaluated one per step, the first of n
   * prompts that arrived together gets its token after one prompt's time instead of n, and the
   * last no later (the streams already started ride along in the next steps). Where a step costs
   * about the same with more tokens (a GPU), all go at once. Default: the batch size (no limit).
   */
  promptPackTokens?: number;
  /**
   * Prompt tokens of different requests evaluated together in one step while at least
   * `busyPrompts` prompts wait for one: a queue of prompts, where packing them is throughput and
   * the last of them waits less, while one or two prompts at a time keep their first token as
   * early as promptPackTokens gives it. Default: promptPackTokens (no difference).
   */
  busyPromptPackTokens?: number;
  /** Prompts waiting at once from which busyPromptPackTokens applies. Default 3. */
  busyPrompts?: number;
  /**
   * While two or more prompts wait and every generating request ends within as many tokens as
   * prompts wait (the tokens its max_tokens leaves), a step takes all the waiting prompts the
   * batch holds, whatever promptPackTokens says. Taken one a step, those prompts would each share
   * their step with a decode pass of the few streams about to end (with one KV stream per
   * sequence llama.cpp runs that pass apart: it costs what a decode step costs), and the streams
   * they start would join later, narrow passes: with short answers most passes were a few tokens
   * wide. Packed, they cost what they cost apart and the passes after decode them together.
   * Streams with many tokens left keep promptPackTokens (a long prompt step would only stall
   * them), so do steps with nothing generating (requests that arrive together still start one a
   * step). The engine addon's native loop applies the same rule to the prompts fed to it.
   * Default true.
   */
  drainPack?: boolean;
  /**
   * When the loop is idle, how long the first request waits for others arriving with it, so
   * that they share the first decode call. Default 2 ms; 0 when promptPackTokens is below the
   * batch size (prompts that arrive together would not share a step anyway).
   */
  coalesceMs?: number;
  /**
   * Shortest prompt prefix worth copying from another slot's KV cache (or waiting for while
   * another slot is still evaluating it) instead of evaluating it again. Default 32 tokens.
   */
  minSharedPrefix?: number;
}

/**
 * Prompt tokens a slot's cached prefix may lose to the longest one on offer and still be chosen
 * for keeping busy slots consecutive. With llama.cpp's per-sequence KV streams (node-llama-cpp's
 * contexts are not unified), a step is split into one micro-batch per run of consecutive
 * sequence ids, each a whole pass over the weights: four streams on slots {0, 1, 4, 5} decode as
 * two 2-token passes. Measured on 2 zen4 cores (2026-12-01), prompts packed in one step (eight
 * clients in waves, as a GPU packs): after eight clients had left every slot holding a prompt
 * that shared "Request " with the next ones, four clients were spread over the eight slots by
 * the fewest-lost-tokens and least-recently-used rules and ran 11-13% slower (decode steps 4.37
 * against 3.75 ms a token, `gemm4xN<2>` in place of `gemm4xN<4>` in perf); kept consecutive,
 * +13.5% at four clients and +8% at eight (docs/PERFORMANCE.md). Re-evaluating a few prompt
 * tokens once costs less than a pass a step for a request's life.
 */
const SLOT_CONTIGUITY_TOKENS = 16;

/**
 * Cached tokens a slot may lose beyond the fewest any candidate would lose and still win by being
 * next to busy slots. Without this bound an unrelated short prompt arriving while another streamed
 * took the idle slot beside it even when that slot held a ~100-token conversation and a slot
 * holding a few stale tokens was free elsewhere: the conversation's follow-up then found one token
 * cached (seen in CI, test/batching.e2e-spec.ts). The bench's closed-loop streams leave caches of
 * about the same length everywhere (prompt + 64 tokens), so contiguity still decides there; a
 * longer cache than the rest is more likely a conversation that comes back, and its re-evaluation
 * (about 1 ms a token on 2 CPU cores) is paid on the critical path of its next turn.
 */
const SLOT_CONTIGUITY_LOSS_TOKENS = 32;

/** What the scheduler reports when a request ends (any way it ends). */
export interface RequestOutcome {
  /** `error` when the runtime failed or the deadline passed. */
  readonly finishReason: FinishReason | 'error';
  readonly promptTokens: number;
  readonly cachedPromptTokens: number;
  readonly completionTokens: number;
  /** From submission to the end, queue wait included. */
  readonly durationMs: number;
}

/**
 * Observer hooks for metrics and tracing; all optional, called synchronously, and never allowed
 * to break a request (exceptions are swallowed).
 */
export interface SchedulerObserver {
  /** Time from submission to getting a slot. */
  onQueueWait?(ms: number): void;
  onRejected?(code: BatchingErrorCode): void;
  onStateChange?(snapshot: SchedulerSnapshot): void;
  /** Time from submission to the first generated token. */
  onFirstToken?(ms: number): void;
  /**
   * Gap between two consecutive tokens of one request. Called once per token on the hot path,
   * so unlike the other per-request hooks it runs in the loop's async context, not the
   * request's: it must not need request-scoped state (it feeds a histogram).
   */
  onInterToken?(ms: number): void;
  onFinish?(outcome: RequestOutcome): void;
  /** One decode call: tokens and sequences evaluated, its time, and the step's host overhead. */
  onStep?(step: StepStats): void;
}

/** One submitted request, from the queue to its end. */
class Request {
  readonly channel = new AsyncChannel<TokenEvent>();
  readonly submittedAt = performance.now();
  /** The slot it holds; null while queued and after it ended. */
  slot: number | null = null;
  cancelled = false;
  /** Set when the request must end with an error instead of `done` (deadline). */
  failure: unknown = null;
  completionTokens = 0;
  cachedPromptTokens = 0;
  lastTokenAt = 0;
  /** Prompt tokens not evaluated yet. */
  pending: readonly number[] = [];
  /** The last sampled token, evaluated at the next step; null until the first one. */
  next: number | null = null;
  readonly cleanups: (() => void)[] = [];
  /**
   * The submitter's async context. The loop runs in whichever context started it, so per-request
   * observer hooks are called inside this one: request-scoped logs and spans stay correct.
   */
  readonly scope = new AsyncResource('LlmGeneration');

  constructor(
    readonly job: GenerationJob,
    readonly priority: number,
  ) {}
}

interface Slot {
  /** Changed only by Scheduler#transition. */
  state: SlotState;
  /** When the slot last got a request (for least-recently-used choice). */
  lastUsed: number;
  /** Tokens whose KV cells this slot holds, position by position. */
  cached: number[];
  request: Request | null;
  /** In WaitOther: the slot evaluating the prefix, and how many of its tokens this one wants. */
  waitFor: { slot: number; length: number } | null;
}

/**
 * Continuous batching over the shared context's slots, in the manner of llama.cpp's server:
 * one loop, one decode call per step holding every generating slot's next token (decode
 * first) plus chunks of waiting prompts, then one sampling round. Requests wait in a bounded
 * priority queue; a new request goes to the idle slot whose KV cache holds the longest prefix
 * of its prompt, and a prefix that another slot holds (or is evaluating right now) is copied
 * instead of evaluated again. Output is a typed AsyncIterable of tokens per request.
 */
export class Scheduler {
  readonly #runtime: DecodeRuntime;
  readonly #slots: Slot[];
  readonly #queue = new BoundedPriorityQueue<Request>(Number.MAX_SAFE_INTEGER);
  readonly #queueMax: number;
  readonly #queueTimeoutMs: number;
  readonly #prefillChunk: number;
  readonly #packTokens: number;
  readonly #busyPackTokens: number;
  readonly #busyPrompts: number;
  readonly #drainPack: boolean;
  readonly #minShared: number;
  readonly #coalesceMs: number;
  readonly #observer: SchedulerObserver;
  #accepting = true;
  #looping = false;
  /** A runtime run (DecodeRuntime.run) is in flight: the loop is not between steps. */
  #running = false;
  /** The slots of the run in flight's first step (a prompt chunk there ends the run by itself). */
  #runSlots = new Set<number>();
  /**
   * Slots whose prompt was fed to the run in flight (DecodeRuntime.feed) and not reported yet,
   * with the KV length the runtime cuts them to when it takes the prompt in.
   */
  readonly #fed = new Map<number, number>();
  /** Every slot fed to the run in flight, reported or not: a failed run fails them too. */
  readonly #joined = new Set<number>();
  /** The run in flight may still take prompts: not once it refused one or was asked to stop. */
  #feedable = false;
  #avgJobMs = 1000;
  #idleWaiters: (() => void)[] = [];
  /** A slot changed state since the observer last heard (see #notify). */
  #changed = false;

  /** Debug lines only (LOG_LEVEL=debug), each behind debugEnabled(): the loop is the hot path. */
  readonly #log = new Logger('Scheduler');

  constructor(runtime: DecodeRuntime, options: SchedulerOptions = {}, observer: SchedulerObserver = {}) {
    if (runtime.slotCount < 1) throw new RangeError(`runtime must have at least one slot, has ${runtime.slotCount}`);
    this.#runtime = runtime;
    this.#slots = Array.from({ length: runtime.slotCount }, () => ({ state: SlotState.Idle, lastUsed: 0, cached: [], request: null, waitFor: null }));
    this.#queueMax = options.queueMax ?? 64;
    this.#queueTimeoutMs = options.queueTimeoutMs ?? 30_000;
    this.#prefillChunk = Math.max(1, Math.min(options.prefillChunk ?? 128, runtime.batchSize));
    this.#minShared = Math.max(1, options.minSharedPrefix ?? 32);
    this.#packTokens = Math.max(1, Math.min(options.promptPackTokens ?? runtime.batchSize, runtime.batchSize));
    this.#busyPackTokens = Math.max(this.#packTokens, Math.min(options.busyPromptPackTokens ?? this.#packTokens, runtime.batchSize));
    this.#busyPrompts = Math.max(2, options.busyPrompts ?? 3);
    this.#drainPack = options.drainPack ?? true;
    this.#coalesceMs = Math.max(0, options.coalesceMs ?? (this.#packTokens < runtime.batchSize ? 0 : 2));
    this.#observer = observer;
  }

  snapshot(): SchedulerSnapshot {
    let busy = 0;
    let kv = 0;
    for (const s of this.#slots) {
      if (s.state !== SlotState.Idle) busy++;
      kv += s.cached.length;
    }
    return {
      slots: this.#slots.map((s) => s.state),
      busySlots: busy,
      queueDepth: this.#queue.size,
      queueCapacity: this.#queueMax,
      accepting: this.#accepting,
      kvTokens: kv,
    };
  }

  /** Tokens held in a slot's KV cache (for tests and diagnostics). */
  cachedTokens(slot: number): readonly number[] {
    return this.#slots[slot]?.cached ?? [];
  }

  /**
   * Queues a job. Nothing happens until the stream is iterated; the first `next()` rejects with
   * a BatchingException when the queue is full or the scheduler is draining, and later with
   * queue_timeout or deadline_exceeded. Leaving the iteration early (return) cancels the job.
   */
  submit(job: GenerationJob, options: SubmitOptions = {}): AsyncIterable<TokenEvent> {
    return { [Symbol.asyncIterator]: () => this.#stream(job, options) };
  }

  /** Stops admitting new work (503); queued and running requests still complete. */
  stopAccepting(): void {
    this.#accepting = false;
    this.#notify();
  }

  /** Resolves once no slot is busy and the queue is empty. */
  whenIdle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  async *#stream(job: GenerationJob, options: SubmitOptions): AsyncGenerator<TokenEvent> {
    const request = this.#admit(job, options);
    try {
      yield* request.channel;
    } finally {
      // The consumer left (return, error) or the stream ended: make sure the slot is let go.
      if (request.slot !== null || this.#queue.indexOf(request) >= 0) this.#cancel(request, null);
      for (const c of request.cleanups) c();
    }
  }

  #admit(job: GenerationJob, options: SubmitOptions): Request {
    if (job.prompt.length === 0) throw new BatchingException(BatchingErrorCode.InvalidJob, 'The prompt has no tokens');
    if (!Number.isInteger(job.maxTokens) || job.maxTokens < 1) {
      throw new BatchingException(BatchingErrorCode.InvalidJob, `maxTokens must be a positive integer, got ${job.maxTokens}`);
    }
    if (job.prompt.length + job.maxTokens > this.#runtime.contextSize) {
      throw new BatchingException(
        BatchingErrorCode.InvalidJob,
        `prompt (${job.prompt.length}) + maxTokens (${job.maxTokens}) exceed the slot context of ${this.#runtime.contextSize} tokens`,
      );
    }
    if (options.signal?.aborted) throw new BatchingException(BatchingErrorCode.Cancelled, 'Request cancelled before it was queued');
    if (!this.#accepting) throw this.#reject(BatchingErrorCode.ShuttingDown, 'Server is shutting down', 5);
    const idle = this.#slots.filter((s) => s.state === SlotState.Idle).length;
    if (this.#queue.size >= this.#queueMax + idle) {
      // Requests about to take an idle slot are in the queue for a moment; they are not "waiting".
      const waiting = this.#queue.size - idle;
      if (debugEnabled()) this.#log.debug(`refused: queue full (${waiting} waiting, limit ${this.#queueMax}), ${this.#slots.length - idle}/${this.#slots.length} slots busy`);
      throw this.#reject(
        BatchingErrorCode.QueueFull,
        `Server busy: the queue is full (${waiting} waiting, limit ${this.#queueMax}) and ${this.#slots.length - idle} of ${this.#slots.length} slots are generating`,
        this.#retryAfterSeconds(),
      );
    }
    const request = new Request(job, options.priority ?? 0);
    this.#queue.offer(request, request.priority);
    if (debugEnabled()) {
      this.#log.debug(`admitted: ${job.prompt.length} prompt tokens, max ${job.maxTokens} new; queue ${this.#queue.size}, ${idle}/${this.#slots.length} slots idle`);
    }
    const timer = setTimeout(() => {
      if (this.#queue.remove(request)) {
        request.channel.close(
          this.#reject(
            BatchingErrorCode.QueueTimeout,
            `No slot became free within ${this.#queueTimeoutMs} ms (${this.#queue.size} other requests waiting, limit ${this.#queueMax})`,
            this.#retryAfterSeconds(),
          ),
        );
        this.#notify();
      }
    }, this.#queueTimeoutMs);
    request.cleanups.push(() => clearTimeout(timer));
    if (options.signal) {
      const signal = options.signal;
      const onAbort = (): void => this.#cancel(request, null);
      signal.addEventListener('abort', onAbort, { once: true });
      request.cleanups.push(() => signal.removeEventListener('abort', onAbort));
    }
    if (options.deadline !== undefined) {
      const deadline = setTimeout(
        () => this.#cancel(request, new BatchingException(BatchingErrorCode.DeadlineExceeded, 'Request deadline exceeded')),
        Math.max(0, options.deadline - Date.now()),
      );
      request.cleanups.push(() => clearTimeout(deadline));
    }
    this.#notify();
    this.#kick();
    this.#poke();
    return request;
  }

  /** Cancels wherever the request is; a running one is finished at the next step boundary. */
  #cancel(request: Request, failure: unknown): void {
    if (request.cancelled) return;
    request.cancelled = true;
    request.failure = failure;
    if (this.#queue.remove(request)) {
      request.channel.close(failure ?? new BatchingException(BatchingErrorCode.Cancelled, 'Request cancelled while waiting for a slot'));
      this.#emitFor(request, 'onFinish', this.#outcome(request, failure ? 'error' : 'abort'));
      this.#notify();
      return;
    }
    if (request.slot !== null) {
      if (this.#slots[request.slot].state !== SlotState.Draining) this.#transition(request.slot, SlotState.Draining);
      if (!this.#looping) this.#reap();
      else this.#poke();
    }
  }

  /**
   * The one place a slot changes state: checks the move against SLOT_TRANSITIONS (a wrong one is
   * a scheduler bug, thrown at once rather than left to corrupt KV bookkeeping) and keeps the
   * slot's request and wait target consistent with it.
   */
  #transition(index: number, to: SlotState, change: { request?: Request; waitFor?: { slot: number; length: number } } = {}): void {
    const slot = this.#slots[index];
    if (!SLOT_TRANSITIONS[slot.state].includes(to)) throw new Error(`slot ${index}: ${slot.state} -> ${to} is not a valid transition`);
    if (slot.state === SlotState.Idle) {
      const request = change.request as Request;
      slot.request = request;
      slot.lastUsed = performance.now();
      request.slot = index;
    }
    slot.waitFor = to === SlotState.WaitOther ? (change.waitFor ?? null) : null;
    if (to === SlotState.Idle && slot.request) {
      slot.request.slot = null;
      slot.request = null;
    }
    if (slot.state !== to) this.#changed = true;
    slot.state = to;
  }

  #kick(): void {
    if (this.#looping) return;
    this.#looping = true;
    const run =
      this.#coalesceMs > 0 ? new Promise((r) => setTimeout(r, this.#coalesceMs)).then(() => this.#loop()) : this.#loop();
    void run.finally(() => {
      this.#looping = false;
      // Work may have arrived between the last check and the flag reset.
      if (this.#hasWork()) this.#kick();
      else this.#notify();
    });
  }

  #hasWork(): boolean {
    return this.#queue.size > 0 || this.#slots.some((s) => s.request !== null);
  }

  async #loop(): Promise<void> {
    // When the previous decode call completed, if this step follows it without a pause: the
    // time from there to this call's completion, minus the engine's compute, is host overhead.
    let previousDone: number | null = null;
    while (this.#hasWork()) {
      this.#reap();
      const copying = this.#assignSlots();
      if (copying) {
        await copying;
        previousDone = null;
      }
      const items = this.#buildBatch();
      if (items.length === 0) {
        previousDone = null;
        if (!this.#slots.some((s) => s.request !== null)) {
          if (this.#queue.size === 0 || !this.#slots.some((s) => s.state === SlotState.Idle)) return;
        }
        // Only slots waiting on a prefix that is not there yet: yield and look again.
        await new Promise((r) => setImmediate(r));
        continue;
      }
      if (this.#runtime.run) {
        previousDone = await this.#run(items, previousDone);
        continue;
      }
      const started = performance.now();
      let report: DecodeReport | void;
      try {
        report = await this.#runtime.decode(items);
      } catch (err) {
        this.#failItems(items, err);
        previousDone = null;
        continue;
      }
      const done = performance.now();
      const sampleSlots = this.#evaluated(items, report, done - started, previousDone, done);
      previousDone = done;
      if (sampleSlots.length > 0) {
        let sampled: number[];
        try {
          sampled = await this.#runtime.sample(sampleSlots);
        } catch (err) {
          this.#failItems(items.filter((i) => sampleSlots.includes(i.slot)), err);
          previousDone = null;
          continue;
        }
        sampleSlots.forEach((slot, i) => this.#accept(slot, sampled[i]));
      }
      this.#reap();
      // Steady decoding changes nothing the observer shows: report only real changes.
      if (this.#changed) this.#notify();
    }
  }

  /**
   * Steps through the runtime's own loop (DecodeRuntime.run) until it stops: each step's tokens
   * are taken here while the next step computes. Returns when the last step ended (for the next
   * step's host overhead), or null after a failure.
   */
  async #run(items: readonly BatchItem[], previousDone: number | null): Promise<number | null> {
    const plans: RunPlan[] = [];
    for (const item of items) {
      if (!item.logits) continue;
      const r = this.#slots[item.slot].request as Request;
      plans.push({ budget: Math.max(1, r.job.maxTokens - r.completionTokens), stopOnEog: !r.job.sampling.ignoreEos });
    }
    let previous = previousDone;
    const started = performance.now();
    this.#running = true;
    this.#feedable = this.#runtime.feed !== undefined;
    this.#joined.clear();
    this.#runSlots = new Set(items.map((i) => i.slot));
    // A final step frees the runtime: the loop goes on from there at once instead of after the
    // promise, which settles only once the main thread has also taken the tokens of that step
    // (microtasks of every stream: ~3 ms of idle engine per run at 8 streams on 2 cores).
    let ended: () => void = () => undefined;
    let finalSeen = false;
    try {
      const running = (this.#runtime.run as NonNullable<DecodeRuntime['run']>)(items, plans, (step: RunStep) => {
        for (const item of step.items) this.#fed.delete(item.slot);
        const sampleSlots = this.#evaluated(step.items, step.report, step.doneAt - (previous ?? started), previous, step.doneAt);
        previous = step.doneAt;
        let k = 0;
        for (const item of step.items) {
          if (!item.logits) continue;
          const token = step.sampled[k++];
          // A slot cancelled during the run was still evaluated (its KV cells are counted above); its token is dropped.
          if (sampleSlots.includes(item.slot)) this.#accept(item.slot, token);
        }
        if (this.#changed) this.#notify();
        // Last: a step whose bookkeeping threw has not ended the run well (the promise rejects).
        if (step.final) {
          finalSeen = true;
          ended();
        } else this.#poke();
      });
      // Work the run cannot do is already known (a prompt held back by promptPackTokens, a slot
      // waiting for a prefix this step evaluates): the run stops after its first step instead of
      // after the step that computes while that one is reported.
      this.#poke();
      // One promise, settled by the final step or by the run's own: every await between the
      // final step and the next run waits behind a round of the streams' microtasks. A run that
      // reported its final step has no failure left to report (a step fails before it is
      // reported), so a rejection after it is only logged.
      await new Promise<void>((resolve, reject) => {
        ended = resolve;
        running.then(resolve, (err: unknown) => (finalSeen ? this.#log.error(`run failed after its final step: ${String(err)}`) : reject(err)));
      });
    } catch (err) {
      // Requests fed to the run fail with it, taken in or not: their slots' KV state is unknown too.
      const first = new Set(items.map((i) => i.slot));
      const fed = [...this.#joined].filter((slot) => !first.has(slot)).map((slot) => ({ slot, tokens: [], position: 0, logits: false }));
      this.#fed.clear();
      this.#failItems([...items, ...fed], err);
      return null;
    } finally {
      this.#running = false;
    }
    this.#unfeed();
    this.#reap();
    return previous;
  }

  /**
   * Prompts fed to a run that ended before taking them in: their slots go back to the loop's
   * own path (they are still Prefill with all their prompt pending). The runtime may or may not
   * have cut their KV cells: cut them here, where the runtime is the scheduler's again.
   */
  #unfeed(): void {
    for (const [index, reuse] of this.#fed) {
      const slot = this.#slots[index];
      const kept = this.#runtime.truncate(index, reuse);
      if (kept < reuse) {
        slot.cached.length = kept;
        const request = slot.request;
        if (request) {
          request.cachedPromptTokens = kept;
          request.pending = request.job.prompt.slice(kept);
        }
      }
    }
    this.#fed.clear();
  }

  /**
   * Hands the run in flight the prompts it can take without stopping (DecodeRuntime.feed): short
   * prompts (one chunk) of slots already assigned and not in the run (held back by
   * promptPackTokens), then queued requests that an idle slot can take without a prefix copy,
   * in the order the loop would take them. Whatever it cannot feed is left for #poke to stop the
   * run for. Feeding saves stopping and restarting the runtime's loop for every request that
   * arrives while others stream (~2 ms of idle engine each, two a request, measured on 2 cores
   * at 8 streams).
   */
  #feedRun(): void {
    const runtime = this.#runtime as Required<Pick<DecodeRuntime, 'feed'>>;
    // Prompts waiting for a step: fed and not reported yet, this one, and the queue behind it.
    const feed = (items: BatchItem[], plans: RunPlan[]) => runtime.feed(items, plans, this.#packLimit(this.#fed.size + items.length + this.#queue.size));
    // The step that takes a prompt in also decodes every running slot.
    const room = this.#runtime.batchSize - this.#slots.length;
    const fits = (n: number) => n <= this.#prefillChunk && n <= room;
    const plan = (r: Request): RunPlan => ({ budget: Math.max(1, r.job.maxTokens - r.completionTokens), stopOnEog: !r.job.sampling.ignoreEos });
    for (const index of this.#waitingPrompts()) {
      const r = this.#slots[index].request as Request;
      if (this.#runSlots.has(index) || this.#fed.has(index) || !fits(r.pending.length)) continue;
      const position = this.#slots[index].cached.length;
      if (!feed([{ slot: index, tokens: r.pending, position, logits: true }], [plan(r)])) return void (this.#feedable = false);
      this.#fed.set(index, position);
      this.#joined.add(index);
    }
    while (this.#queue.size > 0) {
      const request = this.#queue.peek() as Request;
      const index = this.#bestIdleSlot(request.job.prompt);
      if (index === null) return;
      const slot = this.#slots[index];
      const prompt = request.job.prompt;
      const own = this.#reusable(prompt, slot.cached);
      if (!fits(prompt.length - own)) return;
      // A prefix worth copying (or waiting for) needs the runtime between steps: #poke stops the run.
      if (this.#runtime.copyPrefix && this.#bestDonor(index, prompt, own, new Set())) return;
      this.#queue.poll();
      this.#transition(index, SlotState.Prefill, { request });
      // The slot's first-step item, if it had one, has ended: its new prompt is not a chunk of that step.
      this.#runSlots.delete(index);
      this.#emitFor(request, 'onQueueWait', performance.now() - request.submittedAt);
      this.#runtime.configure(index, request.job.sampling, prompt);
      request.cachedPromptTokens = own;
      request.pending = prompt.slice(own);
      if (!feed([{ slot: index, tokens: request.pending, position: own, logits: true }], [plan(request)])) {
        // The run is ending: the runtime is the scheduler's again, the loop takes the prompt next.
        this.#feedable = false;
        this.#startPrefill(index, request, own);
        return;
      }
      slot.cached.length = Math.min(slot.cached.length, own);
      this.#fed.set(index, own);
      this.#joined.add(index);
      if (debugEnabled()) {
        this.#log.debug(`slot ${index} assigned after ${Math.round(performance.now() - request.submittedAt)} ms queued, fed to the running loop: prefix reuse ${own}/${prompt.length} tokens`);
      }
    }
  }

  /**
   * Books one evaluated step: the KV cells it filled, the prompt tokens it consumed, the observer's
   * step statistics. Returns the slots whose sampled token their request still wants.
   */
  #evaluated(items: readonly BatchItem[], report: DecodeReport | void, ms: number, previousDone: number | null, done: number): number[] {
    let tokens = 0;
    let prompts = 0;
    for (const item of items) {
      tokens += item.tokens.length;
      if (item.tokens.length > 1) prompts++;
    }
    const compute = report ? report.computeMs : undefined;
    this.#emit('onStep', {
      tokens,
      sequences: items.length,
      prompts,
      ms,
      computeMs: compute,
      threads: report ? report.threads : undefined,
      filledTokens: report ? report.filledTokens : undefined,
      hostMs: compute !== undefined && previousDone !== null ? Math.max(0, done - previousDone - compute) : undefined,
    });
    const sampleSlots: number[] = [];
    for (const item of items) {
      const slot = this.#slots[item.slot];
      slot.cached.push(...item.tokens);
      const request = slot.request;
      if (!request) continue;
      if (slot.state === SlotState.Prefill) request.pending = request.pending.slice(item.tokens.length);
      if (item.logits && !request.cancelled) sampleSlots.push(item.slot);
    }
    return sampleSlots;
  }

  /**
   * While a run is in flight, first hands it the prompts it can take (#feedRun), then ends it at
   * the next step boundary when the loop has work the run cannot do: a queued request and a free
   * slot, a cancelled slot to free, a slot waiting for another's prefix, or a prompt with tokens
   * left that is not in the run (one in the run's first step either finishes there or, as a
   * chunk, ends the run by itself).
   */
  #poke(): void {
    if (!this.#running) return;
    if (this.#feedable) this.#feedRun();
    let idle = false;
    for (const [index, slot] of this.#slots.entries()) {
      if (slot.state === SlotState.Draining || slot.state === SlotState.WaitOther) return this.#stopRun();
      const waiting = slot.state === SlotState.Prefill && slot.request && slot.request.pending.length > 0;
      if (waiting && !this.#runSlots.has(index) && !this.#fed.has(index)) return this.#stopRun();
      if (slot.state === SlotState.Idle) idle = true;
    }
    if (idle && this.#queue.size > 0) this.#stopRun();
  }

  /** Asks the run in flight to end at its next step boundary; prompts fed from now on would not be taken in. */
  #stopRun(): void {
    this.#feedable = false;
    this.#runtime.interrupt?.();
  }

  /**
   * Gives idle slots to queued requests, reusing cached prefixes. Synchronous unless a prefix
   * copy is needed: the next decode must start right after sampling, before the consumers of
   * the tokens just produced run (their HTTP work then overlaps the decode).
   */
  #assignSlots(): Promise<void> | undefined {
    const copies: (() => Promise<void>)[] = [];
    const targets = new Set<number>();
    for (const [index, slot] of this.#slots.entries()) {
      if (slot.state === SlotState.WaitOther) this.#resolveWait(index, copies, targets);
    }
    while (this.#queue.size > 0) {
      const request = this.#queue.peek() as Request;
      const index = this.#bestIdleSlot(request.job.prompt);
      if (index === null) break;
      this.#queue.poll();
      const slot = this.#slots[index];
      const prompt = request.job.prompt;
      const own = this.#reusable(prompt, slot.cached);
      const donor = this.#runtime.copyPrefix ? this.#bestDonor(index, prompt, own, targets) : null;
      if (donor && !donor.ready) {
        this.#transition(index, SlotState.WaitOther, { request, waitFor: { slot: donor.slot, length: donor.length } });
      } else {
        this.#transition(index, SlotState.Prefill, { request });
      }
      this.#emitFor(request, 'onQueueWait', performance.now() - request.submittedAt);
      this.#runtime.configure(index, request.job.sampling, prompt);
      this.#startPrefill(index, request, own);
      if (debugEnabled()) {
        const from = donor ? `; ${donor.ready ? 'copying' : 'waiting for'} ${donor.length} from slot ${donor.slot}` : '';
        this.#log.debug(
          `slot ${index} assigned after ${Math.round(performance.now() - request.submittedAt)} ms queued: prefix reuse ${request.cachedPromptTokens}/${prompt.length} tokens${from}`,
        );
      }
      if (donor?.ready) {
        targets.add(index);
        copies.push(async () => this.#startPrefill(index, request, await this.#copy(donor.slot, index, donor.length)));
      }
    }
    if (copies.length === 0) return undefined;
    return (async () => {
      for (const copy of copies) await copy();
    })();
  }

  /** Longest usable prefix: the last prompt token is always evaluated (its logits start generation). */
  #reusable(prompt: readonly number[], cached: readonly number[]): number {
    const limit = Math.min(prompt.length - 1, cached.length);
    let n = 0;
    while (n < limit && cached[n] === prompt[n]) n++;
    return n;
  }

  /** Another slot that holds (ready) or is evaluating (not ready) a longer prefix of `prompt`. */
  #bestDonor(target: number, prompt: readonly number[], own: number, busy: ReadonlySet<number>): { slot: number; length: number; ready: boolean } | null {
    let best: { slot: number; length: number; ready: boolean } | null = null;
    for (const [i, s] of this.#slots.entries()) {
      // A slot about to receive a copy this round has no settled contents to give.
      if (i === target || s.state === SlotState.Draining || busy.has(i)) continue;
      const ready = this.#reusable(prompt, s.cached);
      if (ready >= own + this.#minShared && ready > (best?.length ?? 0)) best = { slot: i, length: ready, ready: true };
      const r = s.request;
      if (s.state === SlotState.Prefill && r) {
        // Evaluating right now: waiting for it beats evaluating the same tokens in parallel.
        const inFlight = this.#reusable(prompt, r.job.prompt);
        if (inFlight >= own + this.#minShared && inFlight > (best?.length ?? 0) + this.#minShared) {
          best = { slot: i, length: inFlight, ready: false };
        }
      }
    }
    return best;
  }

  /** A WaitOther slot whose donor has its prefix ready (or gave up on it) moves on to Prefill, copying what is there. */
  #resolveWait(index: number, copies: (() => Promise<void>)[], targets: Set<number>): void {
    const slot = this.#slots[index];
    const request = slot.request as Request;
    const wait = slot.waitFor as { slot: number; length: number };
    const donor = this.#slots[wait.slot];
    const prompt = request.job.prompt;
    const have = this.#reusable(prompt, donor.cached);
    const stillComing = donor.state === SlotState.Prefill && donor.request !== null && this.#reusable(prompt, donor.request.job.prompt) >= wait.length;
    if (have < wait.length && stillComing) return;
    this.#transition(index, SlotState.Prefill);
    if (have >= request.cachedPromptTokens + this.#minShared && !targets.has(wait.slot)) {
      targets.add(index);
      copies.push(async () => this.#startPrefill(index, request, await this.#copy(wait.slot, index, have)));
    }
  }

  async #copy(from: number, to: number, length: number): Promise<number> {
    try {
      await (this.#runtime.copyPrefix as NonNullable<DecodeRuntime['copyPrefix']>)(from, to, length);
      this.#slots[to].cached = this.#slots[from].cached.slice(0, length);
      return length;
    } catch {
      // A failed copy costs only speed: evaluate the prompt instead, from a clean slot.
      this.#runtime.truncate(to, 0);
      this.#slots[to].cached = [];
      return 0;
    }
  }

  #startPrefill(index: number, request: Request, reuse: number): void {
    const slot = this.#slots[index];
    if (slot.cached.length > reuse) {
      reuse = this.#runtime.truncate(index, reuse);
      slot.cached.length = reuse;
    }
    request.cachedPromptTokens = reuse;
    request.pending = request.job.prompt.slice(reuse);
  }

  #buildBatch(): BatchItem[] {
    const items: BatchItem[] = [];
    for (const [index, slot] of this.#slots.entries()) {
      const r = slot.request;
      if (slot.state === SlotState.Decode && r && !r.cancelled && r.next !== null) {
        items.push({ slot: index, tokens: [r.next], position: slot.cached.length, logits: true });
      }
    }
    // Decode first; then whole short prompts; a long prompt gets at most prefillChunk tokens a
    // step while others are streaming, so their next token is never more than a chunk away.
    // Prompts go short ones first, oldest first, and share a step only within promptPackTokens.
    let budget = this.#runtime.batchSize - items.length;
    let longBudget = items.length > 0 ? this.#prefillChunk : budget;
    let packed = 0;
    const waiting = this.#waitingPrompts();
    const packLimit = this.#drains(items, waiting.length) ? this.#runtime.batchSize : this.#packLimit(waiting.length);
    for (const index of waiting) {
      const slot = this.#slots[index];
      const r = slot.request as Request;
      if (budget <= 0) break;
      const short = r.pending.length <= this.#prefillChunk;
      const n = Math.min(r.pending.length, budget, short ? budget : longBudget);
      if (n <= 0) continue;
      if (packed > 0 && packed + n > packLimit) break;
      items.push({ slot: index, tokens: r.pending.slice(0, n), position: slot.cached.length, logits: n === r.pending.length });
      budget -= n;
      packed += n;
      if (!short) longBudget -= n;
    }
    // Slot order keeps llama.cpp from splitting the step into several micro-batches.
    return items.sort((a, b) => a.slot - b.slot);
  }

  /** Whether a step of these decode items takes every waiting prompt the batch holds (SchedulerOptions.drainPack). */
  #drains(decoding: readonly BatchItem[], waiting: number): boolean {
    if (!this.#drainPack || waiting < 2 || decoding.length === 0) return false;
    return decoding.every((item) => {
      const r = this.#slots[item.slot].request as Request;
      return r.job.maxTokens - r.completionTokens <= waiting;
    });
  }

  /** Prompt tokens of different requests one step may hold while `waiting` prompts wait for one. */
  #packLimit(waiting: number): number {
    return waiting >= this.#busyPrompts ? this.#busyPackTokens : this.#packTokens;
  }

  /** Slots with prompt tokens to evaluate: short prompts (one chunk) first, then long ones, each oldest first. */
  #waitingPrompts(): number[] {
    const waiting: number[] = [];
    for (const [index, slot] of this.#slots.entries()) {
      const r = slot.request;
      if (slot.state === SlotState.Prefill && r && !r.cancelled && r.pending.length > 0) waiting.push(index);
    }
    if (waiting.length < 2) return waiting;
    const request = (index: number) => this.#slots[index].request as Request;
    const long = (index: number) => (request(index).pending.length > this.#prefillChunk ? 1 : 0);
    return waiting.sort((a, b) => long(a) - long(b) || request(a).submittedAt - request(b).submittedAt);
  }

  #accept(index: number, token: number): void {
    const r = this.#slots[index].request;
    if (!r || r.cancelled) return;
    const now = performance.now();
    // A negative token is no token (the sampler had no candidate left, e.g. a finished grammar
    // whose only way out is a banned end token): the generation ends, ignoreEos or not.
    if (token < 0 || (!r.job.sampling.ignoreEos && this.#runtime.isEndOfGeneration(token))) {
      this.#finish(index, 'stop');
      return;
    }
    r.completionTokens++;
    if (r.lastTokenAt === 0) this.#emitFor(r, 'onFirstToken', now - r.submittedAt);
    else this.#emit('onInterToken', now - r.lastTokenAt);
    r.lastTokenAt = now;
    const logprobs = r.job.sampling.logprobs === undefined ? undefined : this.#runtime.sampledLogprobs?.(index);
    const event: Extract<TokenEvent, { kind: 'token' }> = logprobs ? { kind: 'token', token, logprobs } : { kind: 'token', token };
    r.channel.push(r.completionTokens === 1 ? { ...event, cachedPromptTokens: r.cachedPromptTokens } : event);
    if (r.completionTokens >= r.job.maxTokens) {
      this.#finish(index, 'length');
      return;
    }
    r.next = token;
    this.#transition(index, SlotState.Decode);
  }

  #finish(index: number, reason: FinishReason): void {
    const r = this.#slots[index].request as Request;
    if (debugEnabled()) {
      this.#log.debug(
        `slot ${index} finished (${r.failure ? 'error' : reason}): ${r.job.prompt.length} prompt (${r.cachedPromptTokens} reused) + ${r.completionTokens} completion tokens in ${Math.round(performance.now() - r.submittedAt)} ms`,
      );
    }
    this.#transition(index, SlotState.Idle);
    this.#avgJobMs = 0.8 * this.#avgJobMs + 0.2 * (performance.now() - r.submittedAt);
    if (r.failure) {
      r.channel.close(r.failure);
      this.#emitFor(r, 'onFinish', this.#outcome(r, 'error'));
    } else {
      r.channel.push({
        kind: 'done',
        finishReason: reason,
        promptTokens: r.job.prompt.length,
        completionTokens: r.completionTokens,
        cachedPromptTokens: r.cachedPromptTokens,
      });
      r.channel.close();
      this.#emitFor(r, 'onFinish', this.#outcome(r, reason));
    }
  }

  /** Frees the slots of cancelled requests; their KV cells stay for prefix reuse. */
  #reap(): void {
    let changed = false;
    for (const [index, slot] of this.#slots.entries()) {
      if (slot.state === SlotState.Draining) {
        this.#finish(index, 'abort');
        changed = true;
      }
    }
    if (changed) this.#notify();
  }

  #failItems(items: readonly BatchItem[], err: unknown): void {
    for (const item of items) {
      const slot = this.#slots[item.slot];
      // The KV state of a failed step is unknown: start this slot from scratch next time.
      try {
        this.#runtime.truncate(item.slot, 0);
      } catch {
        /* the runtime is already failing; the cache bookkeeping below is what matters */
      }
      slot.cached = [];
      const r = slot.request;
      if (!r) continue;
      r.failure ??= err;
      r.cancelled = true;
      if (slot.state !== SlotState.Draining) this.#transition(item.slot, SlotState.Draining);
      this.#finish(item.slot, 'abort');
    }
    this.#notify();
  }

  /**
   * The idle slot to give a prompt: the longest reusable prefix first (a one-token match, such
   * as a shared BOS, counts as none), where the matches differ by more than
   * SLOT_CONTIGUITY_TOKENS; among slots within that of the longest, the one next to the most busy
   * slots (so that busy slots stay consecutive; not one whose cache would lose more than
   * SLOT_CONTIGUITY_LOSS_TOKENS beyond the fewest lost), then the longer match, then the slot whose
   * cache loses the fewest tokens, then the least recently used. So unrelated prompts go to
   * empty or stale slots and leave warm caches for the requests that can use them, and a few
   * shared tokens (a template's opening, "Request ") do not scatter the streams over the slots.
   */
  #bestIdleSlot(prompt: readonly number[]): number | null {
    const idle: { index: number; match: number; loss: number; used: number; neighbours: number }[] = [];
    let longest = 0;
    const busy = (i: number): boolean => i >= 0 && i < this.#slots.length && this.#slots[i].state !== SlotState.Idle;
    for (let i = 0; i < this.#slots.length; i++) {
      const s = this.#slots[i];
      if (s.state !== SlotState.Idle) continue;
      const raw = this.#reusable(prompt, s.cached);
      const match = raw > 1 ? raw : 0;
      longest = Math.max(longest, match);
      idle.push({ index: i, match, loss: s.cached.length - raw, used: s.lastUsed, neighbours: (busy(i - 1) ? 1 : 0) + (busy(i + 1) ? 1 : 0) });
    }
    let fewestLost = Infinity;
    for (const c of idle) if (c.match >= longest - SLOT_CONTIGUITY_TOKENS) fewestLost = Math.min(fewestLost, c.loss);
    for (const c of idle) if (c.loss > fewestLost + SLOT_CONTIGUITY_LOSS_TOKENS) c.neighbours = 0;
    let best: (typeof idle)[number] | null = null;
    for (const c of idle) {
      if (c.match < longest - SLOT_CONTIGUITY_TOKENS) continue;
      const better =
        !best ||
        c.neighbours > best.neighbours ||
        (c.neighbours === best.neighbours &&
          (c.match > best.match || (c.match === best.match && (c.loss < best.loss || (c.loss === best.loss && c.used < best.used)))));
      if (better) best = c;
    }
    return best ? best.index : null;
  }

  #isIdle(): boolean {
    // A run's worker may still be finishing its last step after every slot ended: not idle until
    // it returned or reported its final step (the context must not be freed under it; after a
    // final step the worker no longer touches it).
    return !this.#running && this.#queue.size === 0 && this.#slots.every((s) => s.state === SlotState.Idle);
  }

  #notify(): void {
    this.#changed = false;
    if (this.#observer.onStateChange) this.#emit('onStateChange', this.snapshot());
    if (this.#idleWaiters.length && this.#isIdle()) {
      for (const resolve of this.#idleWaiters.splice(0)) resolve();
    }
  }

  #outcome(r: Request, reason: RequestOutcome['finishReason']): RequestOutcome {
    return {
      finishReason: reason,
      promptTokens: r.job.prompt.length,
      cachedPromptTokens: r.cachedPromptTokens,
      completionTokens: r.completionTokens,
      durationMs: performance.now() - r.submittedAt,
    };
  }

  #emit<K extends keyof SchedulerObserver>(hook: K, value: Parameters<NonNullable<SchedulerObserver[K]>>[0], extra?: number): void {
    try {
      (this.#observer[hook] as ((v: typeof value, e?: number) => void) | undefined)?.(value, extra);
    } catch {
      // Metrics must never break a request.
    }
  }

  #emitFor<K extends 'onQueueWait' | 'onFirstToken' | 'onFinish'>(
    request: Request,
    hook: K,
    value: Parameters<NonNullable<SchedulerObserver[K]>>[0],
  ): void {
    if (!this.#observer[hook]) return;
    request.scope.runInAsyncScope(() => this.#emit(hook, value));
  }

  #retryAfterSeconds(): number {
    const perSlot = (this.#avgJobMs * (this.#queue.size + 1)) / this.#slots.length / 1000;
    return Math.min(60, Math.max(1, Math.ceil(perSlot)));
  }

  #reject(code: BatchingErrorCode, message: string, retryAfterSeconds: number): BatchingException {
    this.#emit('onRejected', code);
    return new BatchingException(code, message, { retryAfterSeconds });
  }
}
