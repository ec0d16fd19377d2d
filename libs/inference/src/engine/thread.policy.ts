/** Options of {@link AdaptiveThreadPolicy}. */
export interface ThreadPolicyOptions {
  /**
   * A candidate that is not the best known for its kind of step is tried again after this many
   * steps times how much slower it measured (so exploring costs about 1/exploreEvery of the
   * time), so that the estimates follow the machine (other processes, Node's own load). Default 32.
   */
  readonly exploreEvery?: number;
  /** Weight of a new measurement in the running estimates (0..1). Default 0.2. */
  readonly alpha?: number;
  /** Measurements of each candidate before the estimates are trusted. Default 3. */
  readonly warmup?: number;
}

/** A kind of step: decode steps by how many sequences they carry, and prompt-heavy steps. */
function stepKind(sequences: number, tokens: number): string {
  if (tokens >= 32 && tokens >= 4 * sequences) return 'prompt';
  const bucket = sequences <= 1 ? 1 : sequences <= 2 ? 2 : sequences <= 4 ? 4 : sequences <= 8 ? 8 : 16;
  return `decode${bucket}`;
}

/** Thread counts worth comparing under `max` threads: all of them, half, and one. */
export function threadCandidates(max: number): number[] {
  const m = Math.max(1, Math.floor(max));
  return [...new Set([m, Math.ceil(m / 2), 1])];
}

interface Estimate {
  /** Running compute time per token, ms. */
  msPerToken: number;
  samples: number;
}

/**
 * Picks the threads of each decode call by measuring, per kind of step, how long llama.cpp
 * computes with each candidate count (the engine addon reports it), instead of a fixed THREADS.
 *
 * Why measured and not fixed: on 2 cores a persistent 2-thread pool is ~2x faster than 1 thread
 * on an idle machine, and many times slower than 1 as soon as another busy process (or Node's
 * own work on many streams) takes a core, because ggml's threads wait for each other at every
 * barrier. Which count wins depends on the moment, so the policy keeps a running estimate of
 * compute time per token for each candidate and kind of step, uses the best, and now and then
 * tries another (the slower it measured, the rarer) to notice when the machine changes. Pure bookkeeping:
 * the caller measures and applies.
 */
export class AdaptiveThreadPolicy {
  readonly #candidates: readonly number[];
  readonly #estimates = new Map<string, Map<number, Estimate>>();
  /** Per kind of step: when (in steps) each candidate was last explored. */
  readonly #explorations = new Map<string, { explored: Map<number, number> }>();
  readonly #exploreEvery: number;
  readonly #alpha: number;
  readonly #warmup: number;
  #steps = 0;

  constructor(
    readonly maxThreads: number,
    options: ThreadPolicyOptions = {},
  ) {
    this.#candidates = threadCandidates(maxThreads);
    this.#exploreEvery = Math.max(2, options.exploreEvery ?? 32);
    this.#alpha = Math.min(1, Math.max(0.01, options.alpha ?? 0.2));
    this.#warmup = Math.max(1, options.warmup ?? 3);
  }

  /** Threads for a step of `sequences` sequences and `tokens` tokens. */
  choose(sequences: number, tokens: number): number {
    if (this.#candidates.length === 1) return this.#candidates[0];
    this.#steps++;
    const kind = stepKind(sequences, tokens);
    const table = this.#table(kind);
    // Until each candidate has a few measurements, take them in turn (best guess first).
    for (const threads of this.#candidates) {
      if ((table.get(threads)?.samples ?? 0) < this.#warmup) return threads;
    }
    const best = this.#best(table);
    const bestMs = table.get(best)?.msPerToken ?? Infinity;
    // Exploring a candidate k times slower than the best costs k steps' time, so it is explored
    // k times less often: exploration never takes more than about 1/exploreEvery of the time,
    // however bad the alternative is right now (2 threads on a 2-core machine with another busy
    // process can be 30x slower than 1).
    const state = this.#kind(kind);
    for (const threads of this.#candidates) {
      if (threads === best) continue;
      const ratio = Math.max(1, (table.get(threads)?.msPerToken ?? Infinity) / bestMs);
      const since = this.#steps - (state.explored.get(threads) ?? 0);
      if (Number.isFinite(ratio) && since >= this.#exploreEvery * ratio) {
        state.explored.set(threads, this.#steps);
        return threads;
      }
    }
    return best;
  }

  /** Reports how long a step with `threads` took to compute (ms). */
  record(sequences: number, tokens: number, threads: number, computeMs: number): void {
    if (!(computeMs > 0) || tokens < 1 || !this.#candidates.includes(threads)) return;
    const table = this.#table(stepKind(sequences, tokens));
    const perToken = computeMs / tokens;
    const e = table.get(threads);
    if (!e) {
      table.set(threads, { msPerToken: perToken, samples: 1 });
      return;
    }
    if (e.samples < this.#warmup) e.msPerToken = (e.msPerToken * e.samples + perToken) / (e.samples + 1);
    // A faster measurement counts at once: a candidate that was slow while the machine was busy
    // is explored rarely, and must win back quickly when the machine is free again.
    else e.msPerToken += (perToken < e.msPerToken ? Math.max(this.#alpha, 0.6) : this.#alpha) * (perToken - e.msPerToken);
    e.samples++;
  }

  /** Current estimates (ms per token by kind of step and threads), for diagnostics and tests. */
  snapshot(): Record<string, Record<number, number>> {
    const out: Record<string, Record<number, number>> = {};
    for (const [kind, table] of this.#estimates) {
      out[kind] = Object.fromEntries([...table].map(([t, e]) => [t, e.msPerToken]));
    }
    return out;
  }

  #kind(kind: string): { explored: Map<number, number> } {
    let state = this.#explorations.get(kind);
    if (!state) this.#explorations.set(kind, (state = { explored: new Map() }));
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
      const ms = table.get(threads)?.msPerToken ?? Infinity;
      if (ms < bestMs) {
        best = threads;
        bestMs = ms;
      }
    }
    return best;
  }
}
