import { BatchingErrorCode, BatchingException } from './batching.exception';
import {
  FinishReason,
  GenerationEvent,
  GenerationJob,
  SchedulerSnapshot,
  SlotRuntime,
  SlotState,
  SubmitOptions,
} from './batching.types';
import { BoundedPriorityQueue } from './bounded-priority.queue';

/** Scheduler limits. */
export interface SchedulerOptions {
  /** Requests that may wait for a slot; one more gets 429. Default 64. */
  queueMax?: number;
  /** Longest wait for a slot in ms before 503. Default 30,000. */
  queueTimeoutMs?: number;
}

/** What the scheduler reports when a request ends (any way it ends). */
export interface RequestOutcome {
  /** `error` when the runtime failed or the deadline passed; `abort` when cancelled. */
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
  /** Time from submission to getting a slot (0 when one was free). */
  onQueueWait?(ms: number): void;
  onRejected?(code: BatchingErrorCode): void;
  onStateChange?(snapshot: SchedulerSnapshot): void;
  /** Time from submission to the first text event. */
  onFirstToken?(ms: number): void;
  /** Gap between two consecutive text events of one request, per token in the later event. */
  onInterToken?(ms: number): void;
  onFinish?(outcome: RequestOutcome): void;
}

interface Waiter {
  readonly job: GenerationJob;
  readonly enqueuedAt: number;
  resolve(slot: number): void;
  reject(err: unknown): void;
}

/**
 * Hands the shared context's slots to requests. Requests wait in a bounded priority queue;
 * a freed slot goes straight to the next waiter; an idle slot is chosen by the longest prompt
 * prefix it already holds in its KV cache. Output is a typed AsyncIterable per request.
 */
export class Scheduler {
  readonly #runtime: SlotRuntime;
  readonly #slots: SlotState[];
  readonly #queue: BoundedPriorityQueue<Waiter>;
  readonly #queueTimeoutMs: number;
  readonly #observer: SchedulerObserver;
  #accepting = true;
  #avgJobMs = 1000;
  #idleWaiters: (() => void)[] = [];

  constructor(runtime: SlotRuntime, options: SchedulerOptions = {}, observer: SchedulerObserver = {}) {
    if (runtime.slotCount < 1) throw new RangeError(`runtime must have at least one slot, has ${runtime.slotCount}`);
    this.#runtime = runtime;
    this.#slots = Array.from({ length: runtime.slotCount }, () => SlotState.Idle);
    this.#queue = new BoundedPriorityQueue(options.queueMax ?? 64);
    this.#queueTimeoutMs = options.queueTimeoutMs ?? 30_000;
    this.#observer = observer;
  }

  snapshot(): SchedulerSnapshot {
    return {
      slots: [...this.#slots],
      busySlots: this.#slots.filter((s) => s !== SlotState.Idle).length,
      queueDepth: this.#queue.size,
      queueCapacity: this.#queue.capacity,
      accepting: this.#accepting,
    };
  }

  /**
   * Queues a job. Nothing happens until the stream is iterated; the first `next()` rejects with
   * a BatchingException when the queue is full, the wait times out or the scheduler is draining.
   */
  submit(job: GenerationJob, options: SubmitOptions = {}): AsyncIterable<GenerationEvent> {
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

  async *#stream(job: GenerationJob, options: SubmitOptions): AsyncGenerator<GenerationEvent> {
    const controller = new AbortController();
    const cleanups: (() => void)[] = [];
    const forward = (): void => controller.abort(options.signal?.reason);
    if (options.signal?.aborted) forward();
    options.signal?.addEventListener('abort', forward, { once: true });
    cleanups.push(() => options.signal?.removeEventListener('abort', forward));
    const submittedAt = performance.now();
    let deadlineHit = false;
    if (options.deadline !== undefined) {
      const timer = setTimeout(() => {
        deadlineHit = true;
        controller.abort(new BatchingException(BatchingErrorCode.DeadlineExceeded, 'Request deadline exceeded'));
      }, Math.max(0, options.deadline - Date.now()));
      cleanups.push(() => clearTimeout(timer));
    }
    try {
      const slot = await this.#acquire(job, options.priority ?? 0, controller.signal);
      const startedAt = Date.now();
      let lastTextAt = 0;
      let outcome: RequestOutcome | null = null;
      try {
        this.#setState(slot, SlotState.Prefill);
        const events = this.#runtime.run(slot, job, controller.signal, (state) => this.#setState(slot, state));
        for await (const event of events) {
          if (event.kind === 'text') {
            const now = performance.now();
            if (lastTextAt === 0) this.#emit('onFirstToken', now - submittedAt);
            else if (event.tokens > 0) for (let i = 0; i < event.tokens; i++) this.#emit('onInterToken', (now - lastTextAt) / event.tokens);
            lastTextAt = now;
          } else {
            outcome = {
              finishReason: deadlineHit ? 'error' : event.finishReason,
              promptTokens: event.promptTokens,
              cachedPromptTokens: event.cachedPromptTokens,
              completionTokens: event.completionTokens,
              durationMs: performance.now() - submittedAt,
            };
          }
          if (event.kind === 'done' && deadlineHit) {
            throw new BatchingException(BatchingErrorCode.DeadlineExceeded, 'Request deadline exceeded during generation');
          }
          yield event;
        }
      } finally {
        // Reached on completion, error, abort and on the consumer's return(): the runtime
        // iterator has finished with the sequence by now, so the slot is free.
        this.#avgJobMs = 0.8 * this.#avgJobMs + 0.2 * (Date.now() - startedAt);
        this.#release(slot);
        this.#emit(
          'onFinish',
          outcome ?? {
            finishReason: controller.signal.aborted && !deadlineHit ? 'abort' : 'error',
            promptTokens: job.prompt.length,
            cachedPromptTokens: 0,
            completionTokens: 0,
            durationMs: performance.now() - submittedAt,
          },
        );
      }
    } finally {
      for (const c of cleanups) c();
    }
  }

  #acquire(job: GenerationJob, priority: number, signal: AbortSignal): Promise<number> {
    if (signal.aborted) return Promise.reject(this.#abortError(signal));
    if (!this.#accepting) return Promise.reject(this.#reject(BatchingErrorCode.ShuttingDown, 'Server is shutting down', 5));
    if (this.#queue.size === 0) {
      const slot = this.#bestIdleSlot(job.prompt);
      if (slot >= 0) {
        this.#slots[slot] = SlotState.Prefill;
        this.#emit('onQueueWait', 0);
        return Promise.resolve(slot);
      }
    }
    return new Promise<number>((resolve, reject) => {
      const enqueuedAt = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => {
        if (this.#queue.remove(waiter)) finish(() => reject(this.#abortError(signal)));
      };
      const finish = (fn: () => void): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        this.#notify();
        fn();
      };
      const waiter: Waiter = {
        job,
        enqueuedAt,
        resolve: (slot) =>
          finish(() => {
            this.#emit('onQueueWait', Date.now() - enqueuedAt);
            resolve(slot);
          }),
        reject: (err) => finish(() => reject(err)),
      };
      if (!this.#queue.offer(waiter, priority)) {
        reject(
          this.#reject(
            BatchingErrorCode.QueueFull,
            `Server busy: all ${this.#slots.length} slots are generating and the queue holds ${this.#queue.size}/${this.#queue.capacity} requests`,
            this.#retryAfterSeconds(),
          ),
        );
        return;
      }
      timer = setTimeout(() => {
        if (this.#queue.remove(waiter)) {
          waiter.reject(
            this.#reject(
              BatchingErrorCode.QueueTimeout,
              `No slot became free within ${this.#queueTimeoutMs} ms (queue ${this.#queue.size}/${this.#queue.capacity})`,
              this.#retryAfterSeconds(),
            ),
          );
        }
      }, this.#queueTimeoutMs);
      signal.addEventListener('abort', onAbort, { once: true });
      this.#notify();
    });
  }

  #release(slot: number): void {
    this.#slots[slot] = SlotState.Idle;
    const next = this.#queue.poll();
    if (next) {
      this.#slots[slot] = SlotState.Prefill;
      next.resolve(slot);
      return;
    }
    this.#notify();
  }

  #bestIdleSlot(prompt: readonly number[]): number {
    let best = -1;
    let bestLength = -1;
    for (let i = 0; i < this.#slots.length; i++) {
      if (this.#slots[i] !== SlotState.Idle) continue;
      const length = this.#runtime.cachedPrefixLength?.(i, prompt) ?? 0;
      if (length > bestLength) {
        best = i;
        bestLength = length;
      }
    }
    return best;
  }

  #setState(slot: number, state: SlotState): void {
    this.#slots[slot] = state;
    this.#notify();
  }

  #isIdle(): boolean {
    return this.#queue.size === 0 && this.#slots.every((s) => s === SlotState.Idle);
  }

  #notify(): void {
    if (this.#observer.onStateChange) this.#observer.onStateChange(this.snapshot());
    if (this.#idleWaiters.length && this.#isIdle()) {
      for (const resolve of this.#idleWaiters.splice(0)) resolve();
    }
  }

  #emit<K extends 'onFirstToken' | 'onInterToken' | 'onFinish' | 'onQueueWait'>(
    hook: K,
    value: Parameters<NonNullable<SchedulerObserver[K]>>[0],
  ): void {
    try {
      (this.#observer[hook] as ((v: typeof value) => void) | undefined)?.(value);
    } catch {
      // Metrics must never break a request.
    }
  }

  #retryAfterSeconds(): number {
    const perSlot = (this.#avgJobMs * (this.#queue.size + 1)) / this.#slots.length / 1000;
    return Math.min(60, Math.max(1, Math.ceil(perSlot)));
  }

  #reject(code: BatchingErrorCode, message: string, retryAfter: number): BatchingException {
    this.#observer.onRejected?.(code);
    return new BatchingException(code, message, { headers: { 'Retry-After': String(retryAfter) } });
  }

  #abortError(signal: AbortSignal): unknown {
    if (signal.reason instanceof BatchingException) return signal.reason;
    return new BatchingException(BatchingErrorCode.Cancelled, 'Request cancelled while waiting for a slot');
  }
}
