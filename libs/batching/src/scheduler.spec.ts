import { BatchingErrorCode, BatchingException } from './batching.exception';
import { BatchItem, DecodeReport, DecodeRuntime, GenerationJob, RunPlan, RunStep, SamplingParams, SLOT_TRANSITIONS, SlotState, StepStats, TokenEvent } from './batching.types';
import { RequestOutcome, Scheduler } from './scheduler';

const EOG = 2;

/**
 * A fake engine that keeps each slot's KV cache as a token array and checks every decode
 * against it (positions must be contiguous), so that bookkeeping bugs fail loudly. A sampled
 * token depends on the slot's whole KV content and its seed, like a real model's: copying a
 * prefix must give the same tokens as evaluating it. With `manual`, decodes wait for step().
 */
class FakeRuntime implements DecodeRuntime {
  readonly kv: number[][];
  readonly batches: BatchItem[][] = [];
  readonly copies: { from: number; to: number; length: number }[] = [];
  readonly seeds: number[];
  eogAfter = Infinity;
  /** From this KV length on the sampler gives no token (-1), as node-llama-cpp's does with no candidate left. */
  noTokenAfter = Infinity;
  failNextDecode = false;
  /** Decode yields to the event loop (setImmediate) instead of a microtask: time passes per step. */
  slow = false;
  #gate: (() => void)[] = [];

  constructor(
    readonly slotCount: number,
    readonly manual = false,
    readonly batchSize = 512,
    readonly contextSize = 4096,
  ) {
    this.kv = Array.from({ length: slotCount }, () => []);
    this.seeds = Array.from({ length: slotCount }, () => 0);
  }

  step(): void {
    for (const resolve of this.#gate.splice(0)) resolve();
  }

  configure(slot: number, sampling: SamplingParams): void {
    this.seeds[slot] = sampling.seed ?? 0;
  }

  async decode(items: readonly BatchItem[]): Promise<DecodeReport | void> {
    if (this.manual) await new Promise<void>((r) => this.#gate.push(r));
    else if (this.slow) await new Promise((r) => setImmediate(r));
    else await Promise.resolve();
    if (this.failNextDecode) {
      this.failNextDecode = false;
      throw new Error('decode failed');
    }
    const total = items.reduce((n, i) => n + i.tokens.length, 0);
    if (total > this.batchSize) throw new Error(`batch of ${total} exceeds ${this.batchSize}`);
    for (let i = 1; i < items.length; i++) if (items[i - 1].slot >= items[i].slot) throw new Error('items not in slot order');
    for (const item of items) {
      const kv = this.kv[item.slot];
      if (item.position !== kv.length) throw new Error(`slot ${item.slot}: position ${item.position} but KV holds ${kv.length}`);
      kv.push(...item.tokens);
    }
    this.batches.push([...items]);
  }

  async sample(slots: readonly number[]): Promise<number[]> {
    return slots.map((slot) => {
      const kv = this.kv[slot];
      let h = this.seeds[slot] + 7;
      for (const t of kv) h = (h * 31 + t) % 1_000_003;
      if (kv.length >= this.noTokenAfter) return -1;
      return kv.length >= this.eogAfter ? EOG : 100 + (h % 900);
    });
  }

  isEndOfGeneration(token: number): boolean {
    return token === EOG;
  }

  truncate(slot: number, from: number): number {
    this.kv[slot].length = Math.min(this.kv[slot].length, from);
    return from;
  }

  async copyPrefix(from: number, to: number, length: number): Promise<void> {
    this.copies.push({ from, to, length });
    this.kv[to] = this.kv[from].slice(0, length);
  }

  /** Tokens evaluated as prompt (items that did not consist of one generated token). */
  prefillTokens(): number {
    return this.batches.flat().reduce((n, i) => n + (i.tokens.length > 1 || !i.logits ? i.tokens.length : 0), 0);
  }
}

/**
 * The same fake with the runtime's own loop (DecodeRuntime.run), as the engine addon runs it:
 * steps follow each other without the scheduler, each sampled token is fed back by the runtime,
 * and steps reach the scheduler late (a macrotask after they ended, while later steps already
 * ran): the scheduler must keep its KV bookkeeping right however far the runtime is ahead.
 */
class FakeLoopRuntime extends FakeRuntime {
  /** A step takes time (a macrotask), as a native step does: steps do not all run before the first is delivered. */
  override slow = true;
  runs = 0;
  interrupts = 0;
  #interrupted = false;

  interrupt(): void {
    this.interrupts++;
    this.#interrupted = true;
  }

  /** Prompts fed to the run in flight (FakeFeedRuntime), and whether it takes any now. */
  protected fed: { item: BatchItem; plan: RunPlan }[] = [];
  protected pack = 1;
  protected open = false;
  /** The addon's setDrainPack: every fed prompt goes while two or more wait and the generating items end within as many steps. */
  drain = true;
  /** Called when a run decides that the step it just computed is its last (before that step is reported). */
  onClose?: () => void;

  /** Moves fed prompts into the coming step as the addon does: oldest first, within the pack limit, after cutting the slot's KV. */
  protected takeFed(current: BatchItem[], plan: Map<number, RunPlan>): BatchItem[] {
    let packed = 0;
    let total = current.reduce((n, i) => n + i.tokens.length, 0);
    const out = [...current];
    const waiting = this.fed.length;
    const drains = this.drain && current.length > 0 && waiting >= 2 && current.every((i) => (plan.get(i.slot) as RunPlan).budget <= waiting);
    const limit = drains ? this.batchSize : this.pack;
    while (this.fed.length > 0) {
      const { item, plan: p } = this.fed[0];
      const n = item.tokens.length;
      if ((packed > 0 && packed + n > limit) || total + n > this.batchSize) break;
      if (out.some((i) => i.slot === item.slot)) throw new Error(`slot ${item.slot} fed while it generates in the run`);
      this.fed.shift();
      this.kv[item.slot].length = Math.min(this.kv[item.slot].length, item.position);
      plan.set(item.slot, p);
      out.push(item);
      packed += n;
      total += n;
    }
    return out.sort((a, b) => a.slot - b.slot);
  }

  /** A run owns the runtime until its final step (or its end): another run before that is a scheduler bug. */
  #busy = false;
  /** Runs that started from a final step, before the previous run's promise settled. */
  early = 0;
  #settling = 0;

  async run(items: readonly BatchItem[], plans: readonly RunPlan[], onStep: (step: RunStep) => void): Promise<void> {
    if (this.#busy) throw new Error('run() while another run owns the runtime');
    this.#busy = true;
    if (this.#settling > 0) this.early++;
    this.runs++;
    this.#interrupted = false;
    const plan = new Map<number, RunPlan>();
    items.filter((i) => i.logits).forEach((item, k) => plan.set(item.slot, plans[k]));
    let delivered = Promise.resolve();
    let current = [...items];
    this.open = true;
    try {
      for (let first = true; ; first = false) {
        if (!first && this.#interrupted) break;
        if (!first) current = this.takeFed(current, plan);
        await this.decode(current);
        const sampled = await this.sample(current.filter((i) => i.logits).map((i) => i.slot));
        const next: BatchItem[] = [];
        let k = 0;
        for (const item of current) {
          if (!item.logits) continue;
          const token = sampled[k++];
          const p = plan.get(item.slot) as RunPlan;
          if (token >= 0 && !(p.stopOnEog && this.isEndOfGeneration(token)) && p.budget > 1) {
            plan.set(item.slot, { ...p, budget: p.budget - 1 });
            next.push({ slot: item.slot, tokens: [token], position: item.position + item.tokens.length, logits: true });
          }
        }
        // As the addon does: the run knows it ends here (and lets the runtime go) when the step
        // had a prompt chunk, nothing goes on, or an interrupt came while it computed.
        const last = current.some((i) => !i.logits) || (next.length === 0 && this.fed.length === 0) || this.#interrupted;
        if (last) {
          this.#busy = false;
          // Prompts fed and not taken stay the scheduler's (it truncates those slots itself).
          this.open = false;
          this.fed = [];
          this.onClose?.();
        }
        const step: RunStep = { items: current, sampled, report: { computeMs: 1, threads: 1 }, doneAt: performance.now(), final: last };
        delivered = delivered.then(() => new Promise<void>((r) => setImmediate(r))).then(() => onStep(step));
        if (last) break;
        current = next;
      }
    } finally {
      this.#busy = false;
      this.open = false;
      this.fed = [];
    }
    // The promise settles well after the final step (the addon's settles once the main thread has
    // taken that step's tokens too): the scheduler must not wait for it.
    this.#settling++;
    try {
      await delivered;
      for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
    } finally {
      this.#settling--;
    }
  }
}

/** The runtime loop that also takes prompts while it runs (DecodeRuntime.feed), as the engine addon does. */
class FakeFeedRuntime extends FakeLoopRuntime {
  /** Prompts the scheduler fed, and how many of those were refused (the run was ending). */
  feeds = 0;
  refusedFeeds = 0;

  feed(items: readonly BatchItem[], plans: readonly RunPlan[], packTokens: number): boolean {
    if (!this.open) {
      this.refusedFeeds += items.length;
      return false;
    }
    items.forEach((item, k) => this.fed.push({ item, plan: plans[k] }));
    this.pack = packTokens;
    this.feeds += items.length;
    return true;
  }
}

const prompt = (n: number, base = 10): number[] => Array.from({ length: n }, (_, i) => base + (i % 50));
const job = (maxTokens = 3, p: number[] = [1, 5, 6], sampling: SamplingParams = {}): GenerationJob => ({ prompt: p, maxTokens, sampling });

async function collect(stream: AsyncIterable<TokenEvent>): Promise<TokenEvent[]> {
  const out: TokenEvent[] = [];
  for await (const e of stream) out.push(e);
  return out;
}
const tokensOf = (events: TokenEvent[]): number[] => events.flatMap((e) => (e.kind === 'token' ? [e.token] : []));
const doneOf = (events: TokenEvent[]) => events.at(-1) as Extract<TokenEvent, { kind: 'done' }>;

/** Steps a manual runtime until `promise` settles. */
async function drive<T>(rt: FakeRuntime, promise: Promise<T>): Promise<T> {
  let settled = false;
  void promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 100_000 && !settled; i++) {
    rt.step();
    await new Promise((r) => setImmediate(r));
  }
  return promise;
}
const tick = () => new Promise((r) => setImmediate(r));
/** Observers see snapshots, not every change: a state two allowed moves away is fine (e.g. decode -> idle -> prefill within one step). */
const reachable = (from: SlotState, to: SlotState): boolean => SLOT_TRANSITIONS[from].some((mid) => SLOT_TRANSITIONS[mid].includes(to));

const RUNTIMES: [string, typeof FakeRuntime][] = [
  ['one call per step', FakeRuntime],
  ['runtime loop', FakeLoopRuntime],
  ['runtime loop taking prompts while it runs', FakeFeedRuntime],
];

describe.each(RUNTIMES)('Scheduler (%s)', (_name, Runtime) => {
  it('runs a job: prompt prefill, then one token per step, then done; the slot is freed', async () => {
    const rt = new Runtime(2);
    const s = new Scheduler(rt, { queueMax: 4 });
    const events = await collect(s.submit(job(3, [1, 5, 6, 7])));
    expect(tokensOf(events)).toHaveLength(3);
    expect(doneOf(events)).toEqual({ kind: 'done', finishReason: 'length', promptTokens: 4, completionTokens: 3, cachedPromptTokens: 0 });
    expect(rt.batches.map((b) => b.map((i) => i.tokens.length))).toEqual([[4], [1], [1]]);
    expect(s.snapshot()).toMatchObject({ busySlots: 0, queueDepth: 0, kvTokens: 6 });
  });

  it('puts every generating slot into one decode call per step, in slot order', async () => {
    const rt = new Runtime(4);
    const s = new Scheduler(rt, { queueMax: 4 });
    await Promise.all([0, 1, 2, 3].map((i) => collect(s.submit(job(5, prompt(3, i * 100))))));
    // 4 requests x (1 prefill + 4 decode steps) would be 20 calls one at a time.
    expect(rt.batches.length).toBeLessThanOrEqual(7);
    expect(rt.batches.filter((b) => b.length === 4 && b.every((i) => i.tokens.length === 1)).length).toBeGreaterThanOrEqual(3);
  });

  it('an end-of-generation token ends with stop and is not emitted', async () => {
    const rt = new Runtime(1);
    rt.eogAfter = 6;
    const s = new Scheduler(rt);
    const events = await collect(s.submit(job(50, [1, 2, 3, 4])));
    expect(tokensOf(events)).not.toContain(EOG);
    expect(doneOf(events)).toMatchObject({ finishReason: 'stop', completionTokens: 2 });
  });

  it('ignoreEos generates through end-of-generation tokens up to maxTokens', async () => {
    const rt = new Runtime(1);
    rt.eogAfter = 6;
    const events = await collect(new Scheduler(rt).submit(job(10, [1, 2, 3, 4], { ignoreEos: true })));
    expect(doneOf(events)).toMatchObject({ finishReason: 'length', completionTokens: 10 });
  });

  it('rejects with queue_full and a retry-after estimate when slots and queue are full, never growing', async () => {
    const rt = new Runtime(1, true);
    const s = new Scheduler(rt, { queueMax: 2, coalesceMs: 0 });
    const running = [0, 1, 2].map(() => collect(s.submit(job(2))));
    await tick();
    expect(s.snapshot()).toMatchObject({ queueDepth: 2 });
    const err = await collect(s.submit(job(1))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BatchingException);
    expect(err).toMatchObject({ code: BatchingErrorCode.QueueFull });
    expect((err as Error).message).toBe('Server busy: the queue is full (2 waiting, limit 2) and 1 of 1 slots are generating');
    expect((err as BatchingException).data.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    // No transport in the scheduler: the API maps codes to HTTP (apps/api/src/errors).
    expect(err).not.toHaveProperty('status');
    expect(s.snapshot().queueDepth).toBe(2);
    await drive(rt, Promise.all(running));
    expect(s.snapshot()).toMatchObject({ busySlots: 0, queueDepth: 0 });
  });

  it('serves higher priority first and equal priorities in arrival order', async () => {
    const rt = new Runtime(1, true);
    const s = new Scheduler(rt, { queueMax: 10, coalesceMs: 0 });
    const order: string[] = [];
    const run = (name: string, priority: number) => collect(s.submit(job(1, [priority + 1, 9]), { priority })).then(() => order.push(name));
    const all = [run('first', 0), run('low-a', 0), run('low-b', 0), run('high', 5), run('mid', 2)];
    await drive(rt, Promise.all(all));
    expect(order).toEqual(['first', 'high', 'mid', 'low-a', 'low-b']);
  });

  it('a request cancelled while queued leaves the queue at once', async () => {
    const rt = new Runtime(1, true);
    const s = new Scheduler(rt, { queueMax: 4, coalesceMs: 0 });
    const busy = collect(s.submit(job(5)));
    const controller = new AbortController();
    const queued = collect(s.submit(job(1), { signal: controller.signal })).catch((e: unknown) => e);
    await tick();
    expect(s.snapshot().queueDepth).toBe(1);
    controller.abort();
    expect(await queued).toMatchObject({ code: BatchingErrorCode.Cancelled });
    expect(s.snapshot().queueDepth).toBe(0);
    await drive(rt, busy);
  });

  it('a request cancelled while generating frees its slot within one decode step', async () => {
    const rt = new Runtime(1, true);
    const s = new Scheduler(rt, { queueMax: 4 });
    const controller = new AbortController();
    const iterator = s.submit(job(1000), { signal: controller.signal })[Symbol.asyncIterator]();
    expect((await drive(rt, iterator.next())).value).toMatchObject({ kind: 'token' });
    const decodesBefore = rt.batches.length;
    controller.abort();
    const rest: TokenEvent[] = [];
    for (let r = await drive(rt, iterator.next()); !r.done; r = await drive(rt, iterator.next())) rest.push(r.value);
    expect(rest.at(-1)).toMatchObject({ kind: 'done', finishReason: 'abort' });
    expect(rt.batches.length - decodesBefore).toBeLessThanOrEqual(1);
    expect(s.snapshot().busySlots).toBe(0);
  });

  it("a consumer's return() (client gone) frees the slot", async () => {
    const rt = new Runtime(1, true);
    const s = new Scheduler(rt, { queueMax: 4 });
    const iterator = s.submit(job(1000))[Symbol.asyncIterator]();
    await drive(rt, iterator.next());
    await iterator.return?.();
    await drive(rt, s.whenIdle());
    expect(s.snapshot().busySlots).toBe(0);
  });

  it('a queue-full message names the waiting requests and the limit, never more than the limit', async () => {
    const rt = new Runtime(1, true);
    const s = new Scheduler(rt, { queueMax: 1, coalesceMs: 0 });
    // The first takes the idle slot at once, the second waits: the queue is at its limit.
    const running = [0, 1].map(() => collect(s.submit(job(2))));
    const err = await collect(s.submit(job(1))).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: BatchingErrorCode.QueueFull });
    // Not "2/1": the limit is never shown exceeded.
    expect((err as Error).message).toBe('Server busy: the queue is full (1 waiting, limit 1) and 1 of 1 slots are generating');
    await drive(rt, Promise.all(running));
  });

  it('times out a queued request with 503 queue_timeout', async () => {
    const rt = new Runtime(1, true);
    const s = new Scheduler(rt, { queueMax: 4, queueTimeoutMs: 20 });
    const busy = collect(s.submit(job(3)));
    const err = await collect(s.submit(job(1))).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: BatchingErrorCode.QueueTimeout, data: { retryAfterSeconds: expect.any(Number) } });
    expect(s.snapshot().queueDepth).toBe(0);
    await drive(rt, busy);
  });

  it('enforces a per-request deadline during generation (504) and frees the slot', async () => {
    const rt = new Runtime(1, true);
    const s = new Scheduler(rt, { queueMax: 4 });
    const result = collect(s.submit(job(1000), { deadline: Date.now() + 30 })).catch((e: unknown) => e);
    const started = Date.now();
    while (Date.now() - started < 60) {
      rt.step();
      await new Promise((r) => setTimeout(r, 1));
    }
    expect(await drive(rt, result)).toMatchObject({ code: BatchingErrorCode.DeadlineExceeded });
    expect(s.snapshot().busySlots).toBe(0);
  });

  it('rejects a job that cannot fit the slot context', async () => {
    const s = new Scheduler(new Runtime(1, false, 512, 100));
    await expect(collect(s.submit(job(50, prompt(60))))).rejects.toMatchObject({ code: BatchingErrorCode.InvalidJob });
  });

  it('routes to the idle slot holding the longest prefix and evaluates only the rest', async () => {
    const rt = new Runtime(3);
    const s = new Scheduler(rt, { minSharedPrefix: 1000 });
    await Promise.all([collect(s.submit(job(1, prompt(40, 1)))), collect(s.submit(job(1, prompt(40, 500)))), collect(s.submit(job(1, prompt(10, 900))))]);
    const slotOf500 = [0, 1, 2].find((i) => rt.kv[i][0] === 500) as number;
    const before = rt.batches.length;
    const events = await collect(s.submit(job(1, [...prompt(40, 500), 7, 8])));
    const used = rt.batches.slice(before).flat();
    expect(used.every((i) => i.slot === slotOf500)).toBe(true);
    expect(doneOf(events).cachedPromptTokens).toBe(40);
    expect(used[0].tokens).toEqual([7, 8]);
  });

  it('copies a hot prefix from a busy slot instead of evaluating it again, with identical output', async () => {
    const shared = prompt(300, 1);
    const reference = new Runtime(2);
    const alone = await collect(new Scheduler(reference, { minSharedPrefix: 100_000 }).submit(job(5, [...shared, 77], { seed: 3 })));

    const rt = new Runtime(2);
    const s = new Scheduler(rt, { minSharedPrefix: 32 });
    const first = collect(s.submit(job(20, [...shared, 11], { seed: 9 })));
    const second = collect(s.submit(job(5, [...shared, 77], { seed: 3 })));
    const [, events] = await Promise.all([first, second]);
    expect(rt.copies).toEqual([{ from: 0, to: 1, length: 300 }]);
    expect(doneOf(events).cachedPromptTokens).toBe(300);
    // The shared 300 tokens were evaluated once; the second request evaluated only its own token.
    expect(rt.prefillTokens()).toBe(301);
    expect(rt.batches.flat().filter((i) => i.slot === 1 && i.tokens[0] === 77)).toHaveLength(1);
    expect(tokensOf(events)).toEqual(tokensOf(alone));
  });

  it('a request whose prefix another slot is evaluating waits in wait_other, then copies it', async () => {
    const shared = prompt(300, 1);
    const rt = new Runtime(2, false, 64);
    rt.slow = true;
    const seen: SlotState[][] = [];
    const s = new Scheduler(rt, { minSharedPrefix: 32, prefillChunk: 64, coalesceMs: 0 }, { onStateChange: (snap) => seen.push([...snap.slots]) });
    const first = collect(s.submit(job(3, [...shared, 11])));
    await tick();
    const second = collect(s.submit(job(3, [...shared, 77])));
    const [, events] = await Promise.all([first, second]);
    expect(seen.some((slots) => slots[1] === SlotState.WaitOther && slots[0] === SlotState.Prefill)).toBe(true);
    expect(rt.copies).toEqual([{ from: 0, to: 1, length: 300 }]);
    expect(doneOf(events).cachedPromptTokens).toBe(300);
    expect(s.snapshot().slots).toEqual([SlotState.Idle, SlotState.Idle]);
  });

  it('a request cancelled in wait_other frees its slot and the donor carries on', async () => {
    const shared = prompt(300, 1);
    const rt = new Runtime(2, false, 64);
    rt.slow = true;
    const s = new Scheduler(rt, { minSharedPrefix: 32, prefillChunk: 64, coalesceMs: 0 });
    const first = collect(s.submit(job(3, [...shared, 11])));
    await tick();
    const controller = new AbortController();
    const second = collect(s.submit(job(3, [...shared, 77]), { signal: controller.signal })).catch((e: unknown) => e);
    for (let i = 0; i < 20 && s.snapshot().slots[1] !== SlotState.WaitOther; i++) await tick();
    expect(s.snapshot().slots[1]).toBe(SlotState.WaitOther);
    controller.abort();
    expect(tokensOf(await first)).toHaveLength(3);
    await second;
    await s.whenIdle();
    expect(rt.copies).toEqual([]);
    expect(s.snapshot().slots).toEqual([SlotState.Idle, SlotState.Idle]);
  });

  it('every slot-state change observed is one SLOT_TRANSITIONS allows', async () => {
    const rt = new Runtime(3, false, 64);
    rt.slow = true;
    let last: SlotState[] = [SlotState.Idle, SlotState.Idle, SlotState.Idle];
    const bad: string[] = [];
    const s = new Scheduler(rt, { minSharedPrefix: 8, prefillChunk: 16, coalesceMs: 0, queueMax: 100 }, {
      onStateChange: (snap) => {
        snap.slots.forEach((state, i) => {
          if (state !== last[i] && !SLOT_TRANSITIONS[last[i]].includes(state) && !reachable(last[i], state)) bad.push(`${i}: ${last[i]} -> ${state}`);
        });
        last = [...snap.slots];
      },
    });
    const runs = Array.from({ length: 30 }, (_, i) => {
      const controller = new AbortController();
      if (i % 4 === 0) setTimeout(() => controller.abort(), i);
      return collect(s.submit(job(1 + (i % 5), prompt(20 + (i % 3) * 30, (i % 2) * 100)), { signal: controller.signal })).catch(() => null);
    });
    await Promise.all(runs);
    await s.whenIdle();
    expect(bad).toEqual([]);
    expect(s.snapshot().busySlots).toBe(0);
  });

  it('decode before prefill: running streams keep one token per step while a 2,000-token prompt is chunked in', async () => {
    const rt = new Runtime(2, false, 512, 4096);
    const s = new Scheduler(rt, { prefillChunk: 64 });
    const streaming = s.submit(job(60, [1, 2, 3]))[Symbol.asyncIterator]();
    await streaming.next();
    const long = collect(s.submit(job(2, prompt(2000, 3))));
    const rest = (async () => {
      for (let r = await streaming.next(); !r.done; r = await streaming.next());
    })();
    await Promise.all([long, rest]);
    const withBoth = rt.batches.filter((b) => b.some((i) => i.slot === 0) && b.some((i) => i.slot === 1 && !i.logits));
    expect(withBoth.length).toBeGreaterThan(10);
    for (const b of withBoth) {
      expect(b.find((i) => i.slot === 0)?.tokens).toHaveLength(1);
      expect(b.find((i) => i.slot === 1)?.tokens.length).toBeLessThanOrEqual(64);
    }
  });

  it('answers 503 shutting_down after stopAccepting, while running work completes', async () => {
    const rt = new Runtime(1, true);
    const s = new Scheduler(rt, { queueMax: 4 });
    const running = collect(s.submit(job(2)));
    await tick();
    s.stopAccepting();
    await expect(collect(s.submit(job(1)))).rejects.toMatchObject({ code: BatchingErrorCode.ShuttingDown });
    const idle = s.whenIdle();
    await drive(rt, running);
    await idle;
    expect(s.snapshot()).toMatchObject({ busySlots: 0, accepting: false });
  });

  it('a failed decode fails the requests in that batch with the error and frees their slots', async () => {
    const rt = new Runtime(1);
    const s = new Scheduler(rt);
    rt.failNextDecode = true;
    await expect(collect(s.submit(job(3)))).rejects.toThrow('decode failed');
    expect(s.snapshot().busySlots).toBe(0);
    expect(tokensOf(await collect(s.submit(job(3))))).toHaveLength(3);
  });

  it('leaks no slot and keeps KV bookkeeping exact after 1,000 random cancellations', async () => {
    const rt = new Runtime(4, false, 128);
    rt.slow = true;
    const s = new Scheduler(rt, { queueMax: 50, prefillChunk: 16, minSharedPrefix: 4 });
    let seed = 42;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const outcomes = { ok: 0, rejected: 0, cancelled: 0 };
    const all: Promise<void>[] = [];
    for (let i = 0; i < 1000; i++) {
      const controller = new AbortController();
      const p = collect(
        s.submit(job(1 + Math.floor(rand() * 6), prompt(2 + Math.floor(rand() * 40), Math.floor(rand() * 3) * 100)), {
          signal: controller.signal,
          priority: Math.floor(rand() * 3),
        }),
      )
        .then((events) => {
          if (doneOf(events).finishReason === 'abort') outcomes.cancelled++;
          else outcomes.ok++;
        })
        .catch((e: unknown) => {
          if ((e as BatchingException).code === BatchingErrorCode.Cancelled) outcomes.cancelled++;
          else outcomes.rejected++;
        });
      all.push(p);
      if (rand() < 0.7) setTimeout(() => controller.abort(), Math.floor(rand() * 4));
      if (i % 20 === 0) await tick();
    }
    await Promise.all(all);
    await s.whenIdle();
    expect(outcomes.ok + outcomes.rejected + outcomes.cancelled).toBe(1000);
    expect(outcomes.cancelled).toBeGreaterThan(100);
    expect(outcomes.ok).toBeGreaterThan(50);
    expect(s.snapshot()).toMatchObject({ busySlots: 0, queueDepth: 0 });
    for (let i = 0; i < 4; i++) expect(s.cachedTokens(i)).toEqual(rt.kv[i]);
  });
});

describe.each(RUNTIMES)('Scheduler observer (%s)', (_name, Runtime) => {
  it('reports queue wait, first token, inter-token gaps, steps and the outcome', async () => {
    const rt = new Runtime(1);
    const seen = { wait: 0, first: 0, gaps: 0, steps: 0, outcomes: [] as RequestOutcome[] };
    const shapes: [number, number][] = [];
    const s = new Scheduler(rt, { queueMax: 4 }, {
      onQueueWait: () => seen.wait++,
      onFirstToken: () => seen.first++,
      onInterToken: () => seen.gaps++,
      onStep: (step) => {
        seen.steps++;
        expect(step).toMatchObject({ tokens: expect.any(Number), sequences: 1, ms: expect.any(Number) });
        shapes.push([step.tokens, step.prompts]);
      },
      onFinish: (o) => seen.outcomes.push(o),
    });
    await collect(s.submit(job(4)));
    expect(seen).toMatchObject({ wait: 1, first: 1, gaps: 3, steps: 4 });
    // The 3-token prompt is the one prompt item; the next steps decode one token each.
    expect(shapes).toEqual([[3, 1], [1, 0], [1, 0], [1, 0]]);
    expect(seen.outcomes).toEqual([expect.objectContaining({ finishReason: 'length', completionTokens: 4, promptTokens: 3 })]);
  });

  it('reports engine compute and host overhead per step when the runtime times its decode calls', async () => {
    class TimedRuntime extends FakeRuntime {
      override async decode(items: readonly BatchItem[]): Promise<DecodeReport> {
        await super.decode(items);
        return { computeMs: 0.5, threads: 2 };
      }
    }
    const steps: StepStats[] = [];
    const s = new Scheduler(new TimedRuntime(2), { coalesceMs: 0 }, { onStep: (st) => steps.push(st) });
    await Promise.all([collect(s.submit(job(6, prompt(5, 1)))), collect(s.submit(job(6, prompt(5, 200))))]);
    expect(steps.length).toBeGreaterThanOrEqual(6);
    expect(steps.every((st) => st.computeMs === 0.5 && st.threads === 2)).toBe(true);
    // The first step follows no other: no host figure; back-to-back steps get one.
    expect(steps[0].hostMs).toBeUndefined();
    expect(steps.slice(1).every((st) => typeof st.hostMs === 'number' && st.hostMs >= 0)).toBe(true);
    expect(steps.some((st) => st.sequences === 2 && st.tokens === 2)).toBe(true);
  });

  it('without timed decode calls there is no compute or host figure', async () => {
    const steps: StepStats[] = [];
    // (A runtime loop always reports its steps' times.)
    await collect(new Scheduler(new FakeRuntime(1), {}, { onStep: (st) => steps.push(st) }).submit(job(3)));
    expect(steps.every((st) => st.computeMs === undefined && st.hostMs === undefined)).toBe(true);
  });

  it('a throwing observer does not break requests', async () => {
    const boom = () => {
      throw new Error('metrics down');
    };
    const s = new Scheduler(new Runtime(1), {}, { onQueueWait: boom, onFirstToken: boom, onInterToken: boom, onFinish: boom, onStateChange: boom, onStep: boom });
    expect(doneOf(await collect(s.submit(job(2))))).toMatchObject({ completionTokens: 2 });
  });
});

describe.each(RUNTIMES)('Scheduler arrival coalescing (%s)', (_name, Runtime) => {
  it('requests arriving together (in separate ticks) share the first decode call', async () => {
    const rt = new Runtime(4);
    const s = new Scheduler(rt, { coalesceMs: 20 });
    const runs: Promise<TokenEvent[]>[] = [];
    for (let i = 0; i < 4; i++) {
      runs.push(collect(s.submit(job(2, prompt(5, i * 100)))));
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(runs);
    expect(rt.batches[0].map((i) => i.slot)).toEqual([0, 1, 2, 3]);
  });

  it('short prompts are not throttled by prefillChunk; a long one is, while others stream', async () => {
    const rt = new Runtime(4, false, 512);
    const s = new Scheduler(rt, { prefillChunk: 16, coalesceMs: 0 });
    const streaming = s.submit(job(40, [1, 2, 3]))[Symbol.asyncIterator]();
    await streaming.next();
    const before = rt.batches.length;
    const runs = [collect(s.submit(job(1, prompt(10, 100)))), collect(s.submit(job(1, prompt(12, 200)))), collect(s.submit(job(1, prompt(100, 300))))];
    await Promise.all(runs);
    for (let r = await streaming.next(); !r.done; r = await streaming.next());
    const step = rt.batches.slice(before).find((b) => b.some((i) => i.slot !== 0)) as BatchItem[];
    expect(step.map((i) => i.tokens.length)).toEqual([1, 10, 12, 16]);
  });
});

describe.each(RUNTIMES)('Scheduler prompt packing (%s)', (_name, Runtime) => {
  /** Submits the jobs in this order, each in a tick of its own (as separate HTTP requests arrive). */
  async function arriving(s: Scheduler, jobs: GenerationJob[]): Promise<TokenEvent[][]> {
    const runs: Promise<TokenEvent[]>[] = [];
    for (const j of jobs) {
      runs.push(collect(s.submit(j)));
      await tick();
    }
    return Promise.all(runs);
  }
  const promptSizes = (rt: FakeRuntime) => rt.batches.map((b) => b.filter((i) => i.tokens.length > 1).map((i) => i.tokens.length)).filter((p) => p.length > 0);

  it('prompts that arrive together are evaluated one per step, oldest first, while the earlier ones already decode', async () => {
    const rt = new Runtime(4);
    const s = new Scheduler(rt, { promptPackTokens: 16, coalesceMs: 20 });
    const results = await arriving(s, [job(6, prompt(20, 100)), job(6, prompt(30, 200)), job(6, prompt(25, 300))]);
    expect(promptSizes(rt)).toEqual([[20], [30], [25]]);
    // The second prompt's step also decodes the first request (its first token was already out).
    const second = rt.batches.find((b) => b.some((i) => i.tokens.length === 30)) as BatchItem[];
    expect(second.filter((i) => i.tokens.length === 1)).toHaveLength(1);
    // Each held-back prompt goes in the very next step (a runtime loop stops after the first).
    expect(rt.batches.indexOf(second)).toBe(1);
    expect(rt.batches[2].some((i) => i.tokens.length === 25)).toBe(true);
    for (const events of results) expect(doneOf(events)).toMatchObject({ finishReason: 'length', completionTokens: 6 });
  });

  it('small prompts share a step within the limit; by default every prompt shares it (GPU)', async () => {
    const rt = new Runtime(4);
    await arriving(new Scheduler(rt, { promptPackTokens: 16, coalesceMs: 20 }), [job(2, prompt(5, 100)), job(2, prompt(6, 200)), job(2, prompt(7, 300))]);
    expect(promptSizes(rt)).toEqual([[5, 6], [7]]);
    const all = new Runtime(4);
    await arriving(new Scheduler(all, { coalesceMs: 20 }), [job(2, prompt(20, 100)), job(2, prompt(30, 200)), job(2, prompt(25, 300))]);
    expect(promptSizes(all)).toEqual([[20, 30, 25]]);
  });

  it('packs up to busyPromptPackTokens while three or more prompts wait, not one or two', async () => {
    const options = { promptPackTokens: 16, busyPromptPackTokens: 100, coalesceMs: 20 };
    const two = new Runtime(4);
    await arriving(new Scheduler(two, options), [job(2, prompt(20, 100)), job(2, prompt(30, 200))]);
    expect(promptSizes(two)).toEqual([[20], [30]]);
    const four = new Runtime(4);
    await arriving(new Scheduler(four, options), [job(2, prompt(20, 100)), job(2, prompt(30, 200)), job(2, prompt(25, 300)), job(2, prompt(40, 400))]);
    // Within 100 tokens (the fourth does not fit); then one prompt waits: 16 again.
    expect(promptSizes(four)).toEqual([[20, 30, 25], [40]]);
  });

  it('prompts that arrive while others stream: three at once share a step, two do not', async () => {
    for (const [count, expected] of [
      [2, [[20], [21]]],
      [3, [[20, 21, 22]]],
    ] as const) {
      const rt = new Runtime(4);
      rt.slow = true;
      const s = new Scheduler(rt, { promptPackTokens: 16, busyPromptPackTokens: 100, coalesceMs: 0 });
      const streaming = collect(s.submit(job(40, [1, 2, 3])));
      for (let i = 0; i < 5; i++) await tick();
      const before = rt.batches.length;
      const arrivals = Array.from({ length: count }, (_, i) => collect(s.submit(job(2, prompt(20 + i, 100 * (i + 1))))));
      await Promise.all([streaming, ...arrivals]);
      const sizes = rt.batches.slice(before).map((b) => b.filter((i) => i.tokens.length > 3).map((i) => i.tokens.length)).filter((p) => p.length > 0);
      expect(sizes).toEqual(expected);
    }
  });

  it('prompts that arrive while the streams are about to end go in one step (drainPack); not while one has many tokens left, nor with drainPack off', async () => {
    const cases: [number, boolean, number[][]][] = [
      [6, true, [[20, 21, 22]]],
      [40, true, [[20], [21], [22]]],
      [6, false, [[20], [21], [22]]],
    ];
    for (const [maxTokens, drainPack, expected] of cases) {
      const rt = new Runtime(4);
      rt.slow = true;
      if (rt instanceof FakeLoopRuntime) rt.drain = drainPack;
      const s = new Scheduler(rt, { promptPackTokens: 16, coalesceMs: 0, drainPack });
      // Three tokens out: the stream may sample at most three more (one more, if the run is a step ahead).
      const streaming = s.submit(job(maxTokens, [1, 2, 3]))[Symbol.asyncIterator]();
      for (let seen = 0; seen < 3; ) if ((await streaming.next()).value?.kind === 'token') seen++;
      const before = rt.batches.length;
      const arrivals = [0, 1, 2].map((i) => collect(s.submit(job(2, prompt(20 + i, 100 * (i + 1))))));
      await Promise.all(arrivals);
      for (let r = await streaming.next(); !r.done; r = await streaming.next());
      const sizes = rt.batches.slice(before).map((b) => b.filter((i) => i.tokens.length > 3).map((i) => i.tokens.length)).filter((p) => p.length > 0);
      expect([maxTokens, drainPack, sizes]).toEqual([maxTokens, drainPack, expected]);
    }
  });

  it('a short prompt goes before the remaining chunks of a long one, which then goes on', async () => {
    const rt = new Runtime(4, true, 512);
    const s = new Scheduler(rt, { prefillChunk: 16, promptPackTokens: 16, coalesceMs: 0 });
    const streaming = collect(s.submit(job(30, [1, 2, 3])));
    const long = collect(s.submit(job(2, prompt(100, 300))));
    for (let i = 0; i < 3; i++) {
      rt.step();
      await tick();
    }
    const short = collect(s.submit(job(2, prompt(12, 100))));
    const [, longEvents, shortEvents] = await drive(rt, Promise.all([streaming, long, short]));
    const sizes = promptSizes(rt).flat().filter((n) => n > 3);
    // Chunks of 16 (the stream runs), the short prompt whole between two of them, never in the same step as one.
    expect(sizes.filter((n) => n === 12)).toHaveLength(1);
    expect(sizes.filter((n) => n !== 12).reduce((a, b) => a + b, 0)).toBe(100);
    expect(sizes.indexOf(12)).toBeGreaterThan(0);
    expect(sizes.indexOf(12)).toBeLessThan(sizes.length - 1);
    expect(rt.batches.every((b) => b.filter((i) => i.tokens.length > 1).length <= 1)).toBe(true);
    expect(doneOf(longEvents)).toMatchObject({ completionTokens: 2 });
    expect(doneOf(shortEvents)).toMatchObject({ completionTokens: 2 });
  });
});

describe.each(RUNTIMES)('Scheduler slot choice (%s)', (_name, Runtime) => {
  it('keeps busy slots consecutive when the cached prefixes on offer are about as long (one micro-batch a step)', async () => {
    const rt = new Runtime(8);
    const s = new Scheduler(rt, { minSharedPrefix: 1000 });
    // Every slot holds a prompt starting with the same two tokens ("Request "); the even slots'
    // caches are shorter, so the fewest-lost-tokens rule alone would pick 0, 2, 4, 6.
    await Promise.all(Array.from({ length: 8 }, (_, i) => collect(s.submit(job(1, [9, 9, 100 + i, ...prompt(i % 2 === 0 ? 3 : 12, 200 + i)])))));
    const before = rt.batches.length;
    await Promise.all(Array.from({ length: 4 }, (_, i) => collect(s.submit(job(6, [9, 9, 300 + i, 7, 7])))));
    const decodes = rt.batches.slice(before).filter((b) => b.length === 4 && b.every((item) => item.tokens.length === 1));
    expect(decodes.length).toBeGreaterThan(0);
    for (const b of decodes) {
      const slots = b.map((item) => item.slot).sort((x, y) => x - y);
      expect(slots[3] - slots[0]).toBe(3);
    }
  });

  it('does not give a long warm cache away to stay next to a busy slot when a cold slot is free', async () => {
    const rt = new Runtime(3);
    const s = new Scheduler(rt, { minSharedPrefix: 1000 });
    // Slot 0 holds a short prompt, slot 1 a long conversation, slot 2 is empty.
    await Promise.all([collect(s.submit(job(1, [1, 5, 6]))), collect(s.submit(job(1, [1, ...prompt(100, 300)])))]);
    expect(rt.kv[1].slice(0, 2)).toEqual([1, 300]);
    const streaming = s.submit(job(30, [1, 40, 41]))[Symbol.asyncIterator]();
    await streaming.next();
    // Slot 2 streams; an unrelated prompt now finds slot 1 next to it, slot 0 alone but cheap to lose.
    await collect(s.submit(job(1, [1, 7, 8])));
    for (let r = await streaming.next(); !r.done; r = await streaming.next());
    const back = await collect(s.submit(job(1, [1, ...prompt(100, 300), 5])));
    expect(doneOf(back).cachedPromptTokens).toBe(101);
  });

  it('sends an unrelated prompt to an empty slot, not over a warm cache that only shares BOS', async () => {
    const rt = new Runtime(2);
    const s = new Scheduler(rt, { minSharedPrefix: 1000 });
    await collect(s.submit(job(1, [1, ...prompt(80, 300)])));
    const warm = rt.kv.findIndex((kv) => kv.length > 0);
    await collect(s.submit(job(1, [1, 7, 8])));
    expect(rt.kv[warm].slice(0, 2)).toEqual([1, 300]);
    const back = await collect(s.submit(job(1, [1, ...prompt(80, 300), 5])));
    expect(doneOf(back).cachedPromptTokens).toBe(81);
  });
});

describe('Scheduler over a runtime loop', () => {
  it('a steady stream is one run: prompt and every decode step without a round trip through the loop', async () => {
    const rt = new FakeLoopRuntime(2);
    const s = new Scheduler(rt, { coalesceMs: 0 });
    const events = await collect(s.submit(job(20)));
    expect(tokensOf(events)).toHaveLength(20);
    expect(doneOf(events)).toMatchObject({ finishReason: 'length', completionTokens: 20 });
    expect(rt.runs).toBe(1);
    // The budget is exact: the runtime evaluated the prompt and 19 sampled tokens, never a 20th.
    expect(rt.batches).toHaveLength(20);
    expect(s.cachedTokens(0)).toEqual(rt.kv[0]);
  });

  it('a request arriving mid-run interrupts it and joins the next step; the running stream is unchanged', async () => {
    const alone = new FakeLoopRuntime(2);
    const reference = tokensOf(await collect(new Scheduler(alone).submit(job(30, [1, 2, 3], { seed: 5 }))));
    const rt = new FakeLoopRuntime(2);
    const s = new Scheduler(rt);
    const first = s.submit(job(30, [1, 2, 3], { seed: 5 }))[Symbol.asyncIterator]();
    const seen: number[] = [];
    for (let i = 0; i < 5; i++) seen.push(((await first.next()).value as { token: number }).token);
    const second = collect(s.submit(job(4, [7, 8, 9, 10])));
    for (let r = await first.next(); !r.done; r = await first.next()) if (r.value.kind === 'token') seen.push(r.value.token);
    expect(seen).toEqual(reference);
    expect(doneOf(await second)).toMatchObject({ completionTokens: 4 });
    expect(rt.interrupts).toBeGreaterThan(0);
    expect(rt.runs).toBeGreaterThan(1);
    // The run after the interrupted one started from its final step, before its promise settled.
    expect(rt.early).toBeGreaterThan(0);
    // The new prompt was evaluated in a step that also decoded the running stream.
    expect(rt.batches.some((b) => b.some((i) => i.slot === 0 && i.tokens.length === 1) && b.some((i) => i.tokens.length === 4))).toBe(true);
    expect(s.cachedTokens(0)).toEqual(rt.kv[0]);
    expect(s.cachedTokens(1)).toEqual(rt.kv[1]);
  });

  it('a request arriving mid-run is fed to the running loop: no stop, it joins the next step, the running stream is unchanged', async () => {
    const alone = new FakeFeedRuntime(2);
    const reference = tokensOf(await collect(new Scheduler(alone).submit(job(30, [1, 2, 3], { seed: 5 }))));
    const secondAlone = tokensOf(await collect(new Scheduler(new FakeFeedRuntime(2)).submit(job(4, [7, 8, 9, 10], { seed: 9 }))));
    const rt = new FakeFeedRuntime(2);
    const s = new Scheduler(rt);
    const first = s.submit(job(30, [1, 2, 3], { seed: 5 }))[Symbol.asyncIterator]();
    const seen: number[] = [];
    for (let i = 0; i < 5; i++) seen.push(((await first.next()).value as { token: number }).token);
    const second = collect(s.submit(job(4, [7, 8, 9, 10], { seed: 9 })));
    for (let r = await first.next(); !r.done; r = await first.next()) if (r.value.kind === 'token') seen.push(r.value.token);
    expect(seen).toEqual(reference);
    const secondEvents = await second;
    expect(tokensOf(secondEvents)).toEqual(secondAlone);
    expect(doneOf(secondEvents)).toMatchObject({ completionTokens: 4 });
    expect(rt.feeds).toBe(1);
    expect(rt.interrupts).toBe(0);
    expect(rt.runs).toBe(1);
    // Evaluated in a step that also decoded the running stream, after the step that was computing.
    expect(rt.batches.some((b) => b.some((i) => i.slot === 0 && i.tokens.length === 1) && b.some((i) => i.tokens.length === 4))).toBe(true);
    expect(s.cachedTokens(0)).toEqual(rt.kv[0]);
    expect(s.cachedTokens(1)).toEqual(rt.kv[1]);
  });

  it('a fed prompt reuses its slot\'s cached prefix; the runtime cuts the stale cells when it takes the prompt in', async () => {
    const rt = new FakeFeedRuntime(2);
    const s = new Scheduler(rt, { coalesceMs: 0 });
    const base = prompt(40, 300);
    await collect(s.submit(job(6, base)));
    const warm = rt.kv.findIndex((kv) => kv.length > 0);
    expect(rt.kv[warm]).toHaveLength(45);
    const stream = s.submit(job(40, [1, 2, 3]))[Symbol.asyncIterator]();
    for (let i = 0; i < 3; i++) await stream.next();
    // Shares 30 tokens with the warm slot (which holds 45): fed with 30 reused, 15 stale cells cut.
    const events = await collect(s.submit(job(3, [...base.slice(0, 30), 7, 7, 7])));
    expect(doneOf(events)).toMatchObject({ cachedPromptTokens: 30, completionTokens: 3 });
    for (let r = await stream.next(); !r.done; r = await stream.next());
    expect(rt.feeds).toBe(1);
    expect(rt.runs).toBe(2);
    expect(rt.kv[warm].slice(0, 33)).toEqual([...base.slice(0, 30), 7, 7, 7]);
    expect(s.cachedTokens(0)).toEqual(rt.kv[0]);
    expect(s.cachedTokens(1)).toEqual(rt.kv[1]);
  });

  it('a prompt fed to a run that stops before taking it in goes on in the next run from a correctly cut slot', async () => {
    const rt = new FakeFeedRuntime(3);
    const s = new Scheduler(rt, { coalesceMs: 0 });
    const base = prompt(40, 300);
    const reference = tokensOf(await collect(new Scheduler(new FakeFeedRuntime(3)).submit(job(5, [...base.slice(0, 30), 7, 7], { seed: 3 }))));
    await collect(s.submit(job(6, base)));
    const a = s.submit(job(40, [1, 2, 3]))[Symbol.asyncIterator]();
    const leaving = new AbortController();
    const b = s.submit(job(40, [4, 5, 6]), { signal: leaving.signal })[Symbol.asyncIterator]();
    await a.next();
    await b.next();
    const fed = collect(s.submit(job(5, [...base.slice(0, 30), 7, 7], { seed: 3 })));
    // Right away, before the run takes the prompt in: a cancellation stops the run at this step.
    leaving.abort();
    const events = await fed;
    // b's prompt, then this one.
    expect(rt.feeds).toBe(2);
    expect(rt.interrupts).toBeGreaterThan(0);
    expect(tokensOf(events)).toEqual(reference);
    expect(doneOf(events)).toMatchObject({ cachedPromptTokens: 30, completionTokens: 5 });
    for (let r = await a.next(); !r.done; r = await a.next());
    for (const slot of [0, 1, 2]) expect(s.cachedTokens(slot)).toEqual(rt.kv[slot]);
  });

  it('a prompt the ending run refuses is taken by the next run, the slot cut by the scheduler', async () => {
    const rt = new FakeFeedRuntime(2);
    const s = new Scheduler(rt, { coalesceMs: 0 });
    const base = prompt(40, 300);
    await collect(s.submit(job(6, base)));
    let late: Promise<TokenEvent[]> | null = null;
    // The moment the run decides its step is its last (it takes no more prompts), before the scheduler hears of it.
    rt.onClose = () => {
      rt.onClose = undefined;
      late = collect(s.submit(job(3, [...base.slice(0, 30), 9])));
    };
    await collect(s.submit(job(4, [1, 2, 3])));
    expect(late).not.toBeNull();
    const events = await (late as unknown as Promise<TokenEvent[]>);
    expect(rt.refusedFeeds).toBe(1);
    expect(doneOf(events)).toMatchObject({ cachedPromptTokens: 30, completionTokens: 3 });
    for (const slot of [0, 1]) expect(s.cachedTokens(slot)).toEqual(rt.kv[slot]);
  });

  it('a run that fails fails the requests fed to it too, also those it had already taken in', async () => {
    const rt = new FakeFeedRuntime(2);
    const s = new Scheduler(rt, { coalesceMs: 0 });
    const a = s.submit(job(200, [1, 2, 3]))[Symbol.asyncIterator]();
    await a.next();
    const b = s.submit(job(200, [4, 5, 6]))[Symbol.asyncIterator]();
    await b.next();
    expect(rt.feeds).toBe(1);
    expect(rt.runs).toBe(1);
    rt.failNextDecode = true;
    const drain = async (it: AsyncIterator<TokenEvent>) => {
      for (;;) if ((await it.next()).done) return;
    };
    await expect(drain(a)).rejects.toThrow('decode failed');
    await expect(drain(b)).rejects.toThrow('decode failed');
    await s.whenIdle();
    expect(s.snapshot().busySlots).toBe(0);
    // The next request starts from clean slots.
    expect(doneOf(await collect(s.submit(job(3, [4, 5, 6]))))).toMatchObject({ completionTokens: 3, cachedPromptTokens: 0 });
  });

  it('a stream left mid-run frees its slot at the next boundary with the KV bookkeeping intact; the slot is reused correctly', async () => {
    const rt = new FakeLoopRuntime(1);
    const s = new Scheduler(rt);
    const it1 = s.submit(job(200, [1, 2, 3]))[Symbol.asyncIterator]();
    for (let i = 0; i < 3; i++) await it1.next();
    await it1.return?.(undefined);
    await s.whenIdle();
    expect(s.snapshot().busySlots).toBe(0);
    expect(rt.kv[0].length).toBeLessThan(200);
    expect(s.cachedTokens(0)).toEqual(rt.kv[0]);
    // The next job reuses what the slot really holds (the fake checks every position).
    const cached = [...rt.kv[0]];
    const events = await collect(s.submit(job(3, [...cached, 42])));
    expect(doneOf(events)).toMatchObject({ completionTokens: 3, cachedPromptTokens: cached.length });
  });

  it('a sampler that gives no token ends the generation, ignoreEos or not, on both paths', async () => {
    for (const Runtime of [FakeRuntime, FakeLoopRuntime]) {
      const rt = new Runtime(1);
      rt.noTokenAfter = 6;
      const events = await collect(new Scheduler(rt).submit(job(8, [1, 2, 3], { ignoreEos: true })));
      expect(tokensOf(events)).toHaveLength(3);
      expect(tokensOf(events).every((t) => t >= 0)).toBe(true);
      expect(doneOf(events)).toMatchObject({ finishReason: 'stop', completionTokens: 3 });
    }
  });

  it('ends generation at the end-of-generation token unless ignoreEos, exactly as one call per step does', async () => {
    for (const ignoreEos of [false, true]) {
      const rt = new FakeLoopRuntime(1);
      rt.eogAfter = 6;
      const events = await collect(new Scheduler(rt).submit(job(8, [1, 2, 3], { ignoreEos })));
      const step = new FakeRuntime(1);
      step.eogAfter = 6;
      const expected = await collect(new Scheduler(step).submit(job(8, [1, 2, 3], { ignoreEos })));
      expect(events).toEqual(expected);
      expect(rt.kv[0]).toEqual(step.kv[0]);
    }
  });
});
