/** Options of {@link AdaptiveThreadPolicy}. */
export interface ThreadPolicyOptions {
  /**
   * A candidate that is not the best known for its kind of step is tried again after this many
   * steps (of that kind) times how much more time it measured per step (so exploring costs about
   * 1/exploreEvery of the time, and at most every 16 steps: switching between thread pools has a cost of its own), so that the estimates follow the machine
   * (other processes, Node's own load). Default 32.
   */
  readonly exploreEvery?: number;
  /**
   * A candidate is also tried again once 4 x exploreEvery times the extra time one try would cost
   * (its estimated slowdown over the best, for a step of this size) has passed since it was last
   * measured or tried for that kind of step, clamped to [minExploreMs, maxExploreMs]: the step rule alone
   * would leave a rare kind of step (prompt chunks, one per request) with figures from a busy
   * moment (another process starting) for minutes. Defaults 250 and 30000 ms.
   */
  readonly minExploreMs?: number;
  readonly maxExploreMs?: number;
  /** Recent measurements per candidate whose median is its estimate. Default 8. */
  readonly window?: number;
  /** Clock (ms), for tests. Default performance.now. */
  readonly now?: () => number;
  /** Measurements of each candidate before the estimates are trusted. Default 3. */
  readonly warmup?: number;
}

/** Shortest time between tries of another thread count on prompt steps. */
const PROMPT_MIN_EXPLORE_MS = 10_000;

/**
 * A close candidate (less than 2x slower) that keeps losing its tries is tried at up to this many
 * times the usual interval: on a steady machine each try of it is a step that runs ~1.5x slower
 * for nothing (measured: 5% of the steps at 2-4 streams, a few percent of throughput). Its first
 * win, or any change of the best count, resets the interval.
 */
const MAX_BACKOFF = 8;

/**
 * Fewer threads than the most win only when they measure this much faster (their estimate is
 * weighed 1.15x). The figures are not alike: a try of more threads among steps on fewer is the
 * first step after a switch (the paused pool's worker woken on a core that idled, cold caches)
 * and measures slow, while a try of fewer threads runs on the loop's own warm thread. Traced at
 * one stream on a 2-core zen4 VM (2026-12-01, late afternoon): 2 threads 3.6-4.3 ms a step in a
 * row of them, 4.8-4.9 ms for a try among 1-thread steps, 1 thread 4.1-4.7 ms; so once a busy
 * moment had handed the kind to 1 thread its tries of 2 rarely won it back (on the next VM, 1,610
 * of 2,048 steps of a one-client run on 1 thread, where a server with THREADS=1 had an
 * inter-token latency of 5.0 ms against 4.2 with THREADS=2, and llama-server made 1.13-1.30x
 * with -t 2 what it made with -t 1). Another busy process makes more threads slower by far more
 * than this (several times).
 */
const FEWER_THREADS_MARGIN = 1.15;

/** A kind of step: decode steps by how many sequences they carry, prompt-heavy steps by their tokens. */
function stepKind(sequences: number, tokens: number): string {
  // Prompt chunks cost far less per token than decode steps: a 15-token prefill counted as a
  // one-sequence decode step would make its thread count look 10x faster than it is. And among
  // prompt steps, what more threads buy grows with the tokens (a step's fixed part weighs less):
  // on 2 AMX cores a 38-token step took 26.7 ms on 2 threads and 28.7 on 1, a 115-token step 48
  // and 80. Counted as one kind, 1 thread measured on large steps looked as fast per token as 2
  // threads on small ones, won, and ran the large steps 1.7x slower (PERFORMANCE.md, 2026-12-01).
  if (tokens >= 4 * sequences) return tokens <= 32 ? 'prompt32' : tokens <= 64 ? 'prompt64' : tokens <= 128 ? 'prompt128' : tokens <= 256 ? 'prompt256' : 'prompt>256';
  const bucket = sequences <= 1 ? 1 : sequences <= 2 ? 2 : sequences <= 4 ? 4 : sequences <= 8 ? 8 : 16;
  return `decode${bucket}`;
}

/** Thread counts worth comparing under `max` threads: all of them, half, and one. */
export function threadCandidates(max: number): number[] {
  const m = Math.max(1, Math.floor(max));
  return [...new Set([m, Math.ceil(m / 2), 1])];
}

/** Per kind of step: its steps so far, the last try of each candidate (its step, its clock time), the tries not reported yet, each candidate's backoff. */
interface ExploreState {
  steps: number;
  explored: Map<number, number>;
  triedAt: Map<number, number>;
  awaiting: Map<number, number>;
  backoff: Map<number, number>;
}

interface Estimate {
  /** Median of `recent`: compute time per token, ms. */
  msPerToken: number;
  /** The latest measurements (ms per token), oldest first. */
  recent: number[];
  samples: number;
  /** Step (of its kind) of the latest measurement. */
  at: number;
  /** Clock time of the latest measurement, ms. */
  time: number;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * Picks the threads of each decode call by measuring, per kind of step, how long llama.cpp
 * computes with each candidate count (the engine addon reports it), instead of a fixed THREADS.
 *
 * Why measured and not fixed: on 2 cores a persistent 2-thread pool is ~2x faster than 1 thread
 * on an idle machine, and many times slower than 1 as soon as another busy process (or Node's
 * own work on many streams) takes a core, because ggml's threads wait for each other at every
 * barrier. Which count wins depends on the moment, so the policy keeps a running estimate of
 * compute time per token (a median of the latest steps) for each candidate and kind of step, uses the best, and now and then
 * tries another (the slower it measured, the rarer) to notice when the machine changes. Pure bookkeeping:
 * the caller measures and applies.
 */
export class AdaptiveThreadPolicy {
  readonly #candidates: readonly number[];
  readonly #estimates = new Map<string, Map<number, Estimate>>();
  /**
   * Per kind of step: its steps so far, when (in those steps) each candidate was last explored,
   * and the explorations whose measurement has not come back yet.
   */
  readonly #explorations = new Map<string, ExploreState>();
  readonly #exploreEvery: number;
  readonly #window: number;
  readonly #warmup: number;
  readonly #minExploreMs: number;
  readonly #maxExploreMs: number;
  readonly #now: () => number;

  constructor(
    readonly maxThreads: number,
    options: ThreadPolicyOptions = {},
  ) {
    this.#candidates = threadCandidates(maxThreads);
    this.#exploreEvery = Math.max(2, options.exploreEvery ?? 32);
    this.#window = Math.max(1, Math.floor(options.window ?? 8));
    this.#minExploreMs = options.minExploreMs ?? 250;
    this.#maxExploreMs = options.maxExploreMs ?? 30_000;
    this.#now = options.now ?? (() => performance.now());
    this.#warmup = Math.max(1, options.warmup ?? 3);
  }

  /** Threads for a step of `sequences` sequences and `tokens` tokens. */
  choose(sequences: number, tokens: number): number {
    if (this.#candidates.length === 1) return this.#candidates[0];
    const kind = stepKind(sequences, tokens);
    const table = this.#table(kind);
    const state = this.#kind(kind);
    state.steps++;
    // Until each candidate has a few measurements, take them in turn (best guess first). Not for
    // prompt steps: each is a request's time to first token, so only the best guess (every core)
    // warms up there and the others are measured by exploration, one step at a time.
    const prompt = kind.startsWith('prompt');
    for (const threads of prompt ? this.#candidates.slice(0, 1) : this.#candidates) {
      if ((table.get(threads)?.samples ?? 0) < this.#warmup) return threads;
    }
    const best = this.#best(table);
    const bestMs = table.get(best)?.msPerToken ?? Infinity;
    // Exploring a candidate k times slower than the best costs (k - 1) steps' extra time, so it is
    // explored every exploreEvery * (k - 1) steps of its kind: exploration never takes more than
    // about 1/exploreEvery of the time, however bad the alternative is right now (2 threads on a
    // 2-core machine with another busy process can be 30x slower than 1), and a close one is
    // measured often enough for its median to stay current. Steps are counted per kind: prompt
    // chunks are rare, and counting every step would explore at nearly every one of them.
    for (const threads of this.#candidates) {
      if (threads === best) continue;
      // A try whose figure has not come back yet (the engine's own loop applies a choice a step
      // later, and reports it a step after that) is not a reason to try again.
      const awaiting = state.awaiting.get(threads);
      if (awaiting !== undefined && state.steps - awaiting < 4) continue;
      const ratio = Math.max(1, (table.get(threads)?.msPerToken ?? Infinity) / bestMs);
      const since = state.steps - (state.explored.get(threads) ?? 0);
      // The time rule counts from the later of its last figure and its last try: a try whose step
      // turned out to be of another kind (the engine packed fewer prompts into it than were
      // waiting) brings no figure for this kind, and the rule would otherwise fire again at every
      // step of this kind (seen: 10 of 396 steps at 8 streams were such 1-thread prompt steps).
      const measuredAt = Math.max(table.get(threads)?.time ?? -Infinity, state.triedAt.get(threads) ?? -Infinity);
      // Only close candidates back off: a far one (another busy process) is already tried rarely,
      // and must be tried on time to notice the machine freeing up.
      const backoff = ratio < 2 ? (state.backoff.get(threads) ?? 1) : 1;
      const extraMs = (ratio - 1) * bestMs * tokens * backoff;
      // In time, tries cost at most ~1/(4 x exploreEvery): most of the steps a time rule sees are
      // prompt chunks, and a try there is a longer time to first token for that request.
      // Prompt steps are tried less often (a try is a user's slower first token): at most every
      // 64 of them and 10 s.
      const minMs = prompt ? Math.max(this.#minExploreMs, PROMPT_MIN_EXPLORE_MS) : this.#minExploreMs;
      const afterMs = Math.min(this.#maxExploreMs, Math.max(minMs, 4 * this.#exploreEvery * extraMs));
      const minSteps = prompt ? 64 : 16;
      const now = this.#now();
      if ((Number.isFinite(ratio) && since >= Math.max(minSteps, this.#exploreEvery * (ratio - 1) * backoff)) || now - measuredAt >= afterMs) {
        state.explored.set(threads, state.steps);
        state.triedAt.set(threads, now);
        state.awaiting.set(threads, state.steps);
        return threads;
      }
    }
    return best;
  }

  /** Reports how long a step with `threads` took to compute (ms). */
  record(sequences: number, tokens: number, threads: number, computeMs: number): void {
    if (!(computeMs > 0) || tokens < 1 || !this.#candidates.includes(threads)) return;
    const kind = stepKind(sequences, tokens);
    const table = this.#table(kind);
    const state = this.#kind(kind);
    const tried = state.awaiting.delete(threads);
    const bestBefore = table.size ? this.#best(table) : null;
    const now = state.steps;
    const perToken = computeMs / tokens;
    let e = table.get(threads);
    if (!e) table.set(threads, (e = { msPerToken: perToken, recent: [], samples: 0, at: now, time: 0 }));
    // The estimate is the median of the latest measurements: one slow step is usually a
    // preemption (on 2 cores any other runnable thread stalls ggml's barrier, and a 3.7 ms step
    // takes 15-40 ms now and then), not a slower thread count, so spikes, even a few in a row,
    // do not tip the choice, while a lasting change (another busy process) does within a few
    // steps. A candidate that was slow (so explored rarely) and now measures faster than every
    // other one starts afresh: its old figures describe a machine that has changed, and it must
    // win back at once when the machine is free again (if that was a fluke, its next steps push
    // it back down). Figures older than a long pause are dropped too.
    let others = Infinity;
    for (const [t, other] of table) if (t !== threads) others = Math.min(others, other.msPerToken);
    if ((e.msPerToken > others && perToken < others) || now - e.at > 64 * this.#window) e.recent.length = 0;
    // While a candidate has only its first few figures, only its best one is kept: the first
    // steps of a server meet graph allocation and whatever else starts with it (another server
    // loading a model), and a candidate judged on those would be explored back only slowly.
    if (e.samples < this.#warmup) e.recent = [Math.min(perToken, ...e.recent)];
    else e.recent.push(perToken);
    if (e.recent.length > this.#window) e.recent.shift();
    // With only two figures a median is their mean, and one slow step (a preemption, the first
    // step of a new batch shape) halfway tips it: the better one stands until a third arrives.
    // Seen: 2 threads at [0.30, 0.84] ms a token (median 0.57) lost to 1 thread at 0.55, and ran
    // the next prompt steps 1.7x slower.
    e.msPerToken = e.recent.length < 3 ? Math.min(...e.recent) : median(e.recent);
    e.samples++;
    e.at = now;
    e.time = this.#now();
    const bestAfter = this.#best(table);
    if (bestAfter !== bestBefore) state.backoff.clear();
    else if (tried && threads !== bestAfter) state.backoff.set(threads, Math.min(MAX_BACKOFF, 2 * (state.backoff.get(threads) ?? 1)));
  }

  /** Current estimates (ms per token by kind of step and threads), for diagnostics and tests. */
  snapshot(): Record<string, Record<number, number>> {
    const out: Record<string, Record<number, number>> = {};
    for (const [kind, table] of this.#estimates) {
      out[kind] = Object.fromEntries([...table].map(([t, e]) => [t, e.msPerToken]));
    }
    return out;
  }

  #kind(kind: string): ExploreState {
    let state = this.#explorations.get(kind);
    if (!state) this.#explorations.set(kind, (state = { steps: 0, explored: new Map(), triedAt: new Map(), awaiting: new Map(), backoff: new Map() }));
    return state;
  }

  #table(kind: string): Map<number, Estimate> {
    let table = this.#estimates.get(kind);
    if (!table) this.#estimates.set(kind, (table = new Map()));
    return table;
  }

  #best(table: Map<number, Estimate>): number {
    let best = this.#candidates[0];
    let bestMs = Infinity;
    for (const threads of this.#candidates) {
      const ms = (table.get(threads)?.msPerToken ?? Infinity) * (threads < this.#candidates[0] ? FEWER_THREADS_MARGIN : 1);
      if (ms < bestMs) {
        best = threads;
        bestMs = ms;
      }
    }
    return best;
  }
}
