import { BatchingErrorCode, BatchingException } from './batching.exception';
import { GenerationEvent, GenerationJob, SlotRuntime, SlotState } from './batching.types';
import { Scheduler } from './scheduler';

/**
 * A runtime whose generations advance only when the test says so: each `step()` lets every
 * running job emit one token. Slots remember the last prompt, like a KV cache.
 */
class FakeRuntime implements SlotRuntime {
  readonly cached: number[][];
  readonly running = new Set<number>();
  readonly started: { slot: number; job: GenerationJob }[] = [];
  #tick: (() => void)[] = [];

  constructor(readonly slotCount: number) {
    this.cached = Array.from({ length: slotCount }, () => []);
  }

  step(): void {
    for (const resolve of this.#tick.splice(0)) resolve();
  }

  cachedPrefixLength(slot: number, prompt: readonly number[]): number {
    const c = this.cached[slot];
    let n = 0;
    while (n < c.length && n < prompt.length && c[n] === prompt[n]) n++;
    return n;
  }

  async *run(slot: number, job: GenerationJob, signal: AbortSignal, onState: (s: SlotState) => void): AsyncGenerator<GenerationEvent> {
    if (this.running.has(slot)) throw new Error(`slot ${slot} double-booked`);
    this.running.add(slot);
    this.started.push({ slot, job });
    this.cached[slot] = [...job.prompt];
    try {
      onState(SlotState.Decode);
      let produced = 0;
      while (produced < job.maxTokens && !signal.aborted) {
        await new Promise<void>((resolve) => {
          this.#tick.push(resolve);
          signal.addEventListener('abort', () => resolve(), { once: true });
        });
        if (signal.aborted) break;
        produced++;
        yield { kind: 'text', text: `t${produced}`, tokens: 1 };
      }
      yield {
        kind: 'done',
        finishReason: signal.aborted ? 'abort' : 'length',
        promptTokens: job.prompt.length,
        completionTokens: produced,
        cachedPromptTokens: 0,
      };
    } finally {
      this.running.delete(slot);
    }
  }
}

const job = (maxTokens = 2, prompt: number[] = [1, 2, 3]): GenerationJob => ({ prompt, maxTokens, sampling: {}, stop: [] });

async function collect(stream: AsyncIterable<GenerationEvent>): Promise<GenerationEvent[]> {
  const out: GenerationEvent[] = [];
  for await (const e of stream) out.push(e);
  return out;
}

/** Runs the fake clock until `promise` settles. */
async function drive<T>(rt: FakeRuntime, promise: Promise<T>): Promise<T> {
  let settled = false;
  void promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 10_000 && !settled; i++) {
    rt.step();
    await new Promise((r) => setImmediate(r));
  }
  return promise;
}

const flush = () => new Promise((r) => setImmediate(r));

describe('Scheduler', () => {
  it('runs a job on a slot and frees it afterwards', async () => {
    const rt = new FakeRuntime(2);
    const s = new Scheduler(rt, { queueMax: 4 });
    const events = await drive(rt, collect(s.submit(job(3))));
    expect(events.filter((e) => e.kind === 'text')).toHaveLength(3);
    expect(events.at(-1)).toMatchObject({ kind: 'done', finishReason: 'length', completionTokens: 3 });
    expect(s.snapshot()).toMatchObject({ busySlots: 0, queueDepth: 0 });
  });

  it('rejects with queue_full (429, Retry-After) when slots and queue are full, never growing', async () => {
    const rt = new FakeRuntime(1);
    const s = new Scheduler(rt, { queueMax: 2 });
    const running = [0, 1, 2].map(() => collect(s.submit(job(1))));
    await flush();
    expect(s.snapshot()).toMatchObject({ busySlots: 1, queueDepth: 2 });
    const err = await collect(s.submit(job(1))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BatchingException);
    expect(err).toMatchObject({ code: BatchingErrorCode.QueueFull, status: 429 });
    expect(Number((err as BatchingException).headers['Retry-After'])).toBeGreaterThanOrEqual(1);
    expect(s.snapshot().queueDepth).toBe(2);
    await drive(rt, Promise.all(running));
    expect(s.snapshot()).toMatchObject({ busySlots: 0, queueDepth: 0 });
  });

  it('serves higher priority first and equal priorities in arrival order', async () => {
    const rt = new FakeRuntime(1);
    const s = new Scheduler(rt, { queueMax: 10 });
    const order: string[] = [];
    const run = (name: string, priority: number) =>
      collect(s.submit(job(1, [priority]), { priority })).then(() => order.push(name));
    const all = [run('first', 0), run('low-a', 0), run('low-b', 0), run('high', 5), run('mid', 2)];
    await drive(rt, Promise.all(all));
    expect(order).toEqual(['first', 'high', 'mid', 'low-a', 'low-b']);
  });

  it('a request cancelled while queued leaves the queue at once', async () => {
    const rt = new FakeRuntime(1);
    const s = new Scheduler(rt, { queueMax: 4 });
    const busy = collect(s.submit(job(5)));
    const controller = new AbortController();
    const queued = collect(s.submit(job(1), { signal: controller.signal })).catch((e: unknown) => e);
    await flush();
    expect(s.snapshot().queueDepth).toBe(1);
    controller.abort();
    expect(await queued).toMatchObject({ code: BatchingErrorCode.Cancelled });
    expect(s.snapshot().queueDepth).toBe(0);
    await drive(rt, busy);
  });

  it('a request cancelled while generating frees its slot within one step', async () => {
    const rt = new FakeRuntime(1);
    const s = new Scheduler(rt, { queueMax: 4 });
    const controller = new AbortController();
    const iterator = s.submit(job(1000), { signal: controller.signal })[Symbol.asyncIterator]();
    expect((await drive(rt, iterator.next())).value).toMatchObject({ kind: 'text' });
    controller.abort();
    const rest: GenerationEvent[] = [];
    for (let r = await iterator.next(); !r.done; r = await iterator.next()) rest.push(r.value);
    expect(rest.at(-1)).toMatchObject({ kind: 'done', finishReason: 'abort', completionTokens: 1 });
    expect(s.snapshot().busySlots).toBe(0);
  });

  it("a consumer's return() (client gone) frees the slot", async () => {
    const rt = new FakeRuntime(1);
    const s = new Scheduler(rt, { queueMax: 4 });
    const iterator = s.submit(job(1000))[Symbol.asyncIterator]();
    await drive(rt, iterator.next());
    await iterator.return?.();
    expect(s.snapshot().busySlots).toBe(0);
    expect(rt.running.size).toBe(0);
  });

  it('times out a queued request with 503 queue_timeout', async () => {
    const rt = new FakeRuntime(1);
    const s = new Scheduler(rt, { queueMax: 4, queueTimeoutMs: 20 });
    const busy = collect(s.submit(job(3)));
    const err = await collect(s.submit(job(1))).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: BatchingErrorCode.QueueTimeout, status: 503 });
    expect(s.snapshot().queueDepth).toBe(0);
    await drive(rt, busy);
  });

  it('enforces a per-request deadline during generation', async () => {
    const rt = new FakeRuntime(1);
    const s = new Scheduler(rt, { queueMax: 4 });
    const err = await collect(s.submit(job(1000), { deadline: Date.now() + 20 })).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: BatchingErrorCode.DeadlineExceeded });
    expect(s.snapshot().busySlots).toBe(0);
  });

  it('routes to the idle slot holding the longest prefix of the prompt', async () => {
    const rt = new FakeRuntime(3);
    const s = new Scheduler(rt, { queueMax: 4 });
    rt.cached[0] = [9, 9];
    rt.cached[1] = [1, 2, 3, 4, 5];
    rt.cached[2] = [1, 2];
    await drive(rt, collect(s.submit(job(1, [1, 2, 3, 4, 7]))));
    expect(rt.started.at(-1)?.slot).toBe(1);
    await drive(rt, collect(s.submit(job(1, [9, 9, 1]))));
    expect(rt.started.at(-1)?.slot).toBe(0);
  });

  it('answers 503 shutting_down after stopAccepting, while running work completes', async () => {
    const rt = new FakeRuntime(1);
    const s = new Scheduler(rt, { queueMax: 4 });
    const running = collect(s.submit(job(2)));
    await flush();
    s.stopAccepting();
    expect(await collect(s.submit(job(1))).catch((e: unknown) => e)).toMatchObject({
      code: BatchingErrorCode.ShuttingDown,
      status: 503,
    });
    const idle = s.whenIdle();
    await drive(rt, running);
    await idle;
    expect(s.snapshot()).toMatchObject({ busySlots: 0, accepting: false });
  });

  it('leaks no slot and never double-books after 1,000 random cancellations', async () => {
    const rt = new FakeRuntime(4);
    const s = new Scheduler(rt, { queueMax: 50 });
    let seed = 42;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const outcomes = { ok: 0, rejected: 0, cancelled: 0 };
    const all: Promise<void>[] = [];
    for (let i = 0; i < 1000; i++) {
      const controller = new AbortController();
      const p = collect(s.submit(job(1 + Math.floor(rand() * 5)), { signal: controller.signal, priority: Math.floor(rand() * 3) }))
        .then((events) => {
          if (events.at(-1)?.kind === 'done' && (events.at(-1) as { finishReason: string }).finishReason === 'abort') outcomes.cancelled++;
          else outcomes.ok++;
        })
        .catch((e: unknown) => {
          if ((e as BatchingException).code === BatchingErrorCode.Cancelled) outcomes.cancelled++;
          else outcomes.rejected++;
        });
      all.push(p);
      if (rand() < 0.7) setTimeout(() => controller.abort(), Math.floor(rand() * 5));
      if (i % 10 === 0) {
        rt.step();
        await flush();
      }
    }
    await drive(rt, Promise.all(all));
    expect(outcomes.ok + outcomes.rejected + outcomes.cancelled).toBe(1000);
    expect(outcomes.cancelled).toBeGreaterThan(100);
    expect(s.snapshot()).toMatchObject({ busySlots: 0, queueDepth: 0 });
    expect(rt.running.size).toBe(0);
  });
});

describe('Scheduler observer', () => {
  it('reports queue wait, first token, inter-token gaps and the outcome', async () => {
    const rt = new FakeRuntime(1);
    const seen = { wait: [] as number[], first: [] as number[], gaps: 0, outcomes: [] as unknown[] };
    const s = new Scheduler(rt, { queueMax: 4 }, {
      onQueueWait: (ms) => seen.wait.push(ms),
      onFirstToken: (ms) => seen.first.push(ms),
      onInterToken: () => seen.gaps++,
      onFinish: (o) => seen.outcomes.push(o),
    });
    await drive(rt, collect(s.submit(job(4))));
    expect(seen.wait).toEqual([0]);
    expect(seen.first).toHaveLength(1);
    expect(seen.gaps).toBe(3);
    expect(seen.outcomes).toEqual([expect.objectContaining({ finishReason: 'length', completionTokens: 4, promptTokens: 3 })]);
  });

  it('a throwing observer does not break requests', async () => {
    const rt = new FakeRuntime(1);
    const boom = () => {
      throw new Error('metrics down');
    };
    const s = new Scheduler(rt, { queueMax: 4 }, { onQueueWait: boom, onFirstToken: boom, onInterToken: boom, onFinish: boom });
    const events = await drive(rt, collect(s.submit(job(2))));
    expect(events.at(-1)).toMatchObject({ kind: 'done', completionTokens: 2 });
  });
});
