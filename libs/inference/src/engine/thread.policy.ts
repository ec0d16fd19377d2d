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
  /**
   * Also measure, for decode steps of two sequences (two to four with one thread), the most
   * threads with the step run as one decode call per token (the engine addon's setDecodeSplit),
   * and use that where it is faster. Default false (the engine cannot split, or runs on a GPU, where every call is a pass
   * of its own for little compute).
   */
  readonly splitDecode?: boolean;
  /**
   * Also measure, for decode steps of five to seven sequences (one run of consecutive slots), the
   * most threads with the step padded to eight tokens (the engine addon's setDecodePad), and use
   * that where it is faster. Default false (fewer than eight slots, no addon, or a GPU).
   */
  readonly padDecode?: boolean;
  /** Threads are fixed (THREADS): only maxThreads is used; the policy then only chooses split and pad variants. Default false. */
  readonly fixedThreads?: boolean;
}

/** How a step runs: its threads, whether a small decode step goes as one decode call per token, and whether a decode step is padded to PAD_WIDTH tokens. */
export interface StepPlan {
  readonly threads: number;
  readonly split: boolean;
  readonly pad: boolean;
}

/** The width padded decode steps reach (setDecodePad): two of the 4-column tiles of ggml's CPU matrix kernels. */
export const PAD_WIDTH = 8;

/**
 * How many times its warm-up figures (`warmup`) a candidate is asked for before the policy stops
 * asking at every step (the engine's own loop applies a choice a step late, so a few asks bring
 * no figure even when the engine runs it).
 */
const WARMUP_ASKS = 4;

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

/**
 * Kinds of step whose split variants are measured (setDecodeSplit splits decode steps of two to
 * four one-token items). On a 2-core zen4 VM (110M Q8_0, 2026-12-02) ggml computed two tokens in
 * one call in 12.9 ms and one in 5.6: split, two tokens took 10.8-11.3 ms, and with one thread
 * splitting won up to four tokens (7.2 ms a token against 19.5-23 for two in one call); three and
 * four tokens on two threads were faster in one call. Which wins is the kernels' and the machine's
 * business, hence measured like the thread counts; but every candidate is tried now and then, and
 * with more than one thread the split of three or four streams only cost its tries (a chat load
 * at four clients: 3% less throughput in three alternated runs), so it is a candidate there only
 * when the policy runs one thread.
 */
const SPLIT_KINDS: ReadonlySet<string> = new Set(['decode2', 'decode2 gaps']);
const SPLIT_KINDS_ONE_THREAD: ReadonlySet<string> = new Set(['decode2', 'decode2 gaps', 'decode4', 'decode4 gaps']);

/**
 * Kinds of step whose pad variants are measured (setDecodePad pads a decode step of five to seven
 * items in one run to eight tokens). On a 2-core zen5 VM (110M Q8_0, 2 threads, 2026-12-02) ggml
 * computed 5 / 6 / 7 / 8 decode tokens in 20.2 / 20.5 / 22.4 / 18.2 ms, and padded to eight 5 /
 * 6 / 7 took 19.2 / 18.5 / 18.2 ms (`scripts/bench-step-layouts.mjs`); on the fifteenth VM's zen4
 * five to seven cost 4-9% more than eight. The output projection must be eight wide too, so the
 * throwaway tokens ask for logits (without: 7 padded to 8 took 20.9 ms).
 */
const PAD_KINDS: ReadonlySet<string> = new Set(['decode5', 'decode6', 'decode7']);

/** How a candidate runs a step: as it is, split into one call per token, or padded. */
const Mode = { Plain: 0, Split: 1, Pad: 2 } as const;
type Mode = (typeof Mode)[keyof typeof Mode];
/** A candidate's key in the tables: its threads times four, plus its mode. */
const keyOf = (threads: number, mode: Mode): number => threads * 4 + mode;
const threadsOf = (key: number): number => key >> 2;
const planOf = (key: number): StepPlan => ({ threads: threadsOf(key), split: (key & 3) === Mode.Split, pad: (key & 3) === Mode.Pad });
const label = (key: number): string => `${threadsOf(key)}${['', 's', 'p'][key & 3]}`;

/**
 * A kind of step: decode steps by how many sequences they carry, prompt-heavy steps by their
 * tokens. Small decode steps whose sequences are not one run of consecutive ids (`runs` > 1) are
 * kinds of their own: llama.cpp makes one pass a run, so one call costs what several do, and a
 * split pays where a consecutive step of the same size does not (a chat load at four clients on 2
 * cores, 2026-12-02: slots 0-3 15.9 ms a step, slots 1, 2, 4, 7 19.0).
 */
function stepKind(sequences: number, tokens: number, runs = 1): string {
  // Prompt chunks cost far less per token than decode steps: a 15-token prefill counted as a
  // one-sequence decode step would make its thread count look 10x faster than it is. And among
  // prompt steps, what more threads buy grows with the tokens (a step's fixed part weighs less):
  // on 2 AMX cores a 38-token step took 26.7 ms on 2 threads and 28.7 on 1, a 115-token step 48
  // and 80. Counted as one kind, 1 thread measured on large steps looked as fast per token as 2
  // threads on small ones, won, and ran the large steps 1.7x slower (PERFORMANCE.md, 2026-12-01).
  if (tokens >= 4 * sequences) return tokens <= 32 ? 'prompt32' : tokens <= 64 ? 'prompt64' : tokens <= 128 ? 'prompt128' : tokens <= 256 ? 'prompt256' : 'prompt>256';
  // Five to seven sequences are kinds of their own: padded to eight they may cost less (PAD_KINDS).
  const bucket = sequences <= 1 ? 1 : sequences <= 2 ? 2 : sequences <= 4 ? 4 : sequences <= 7 ? sequences : sequences <= 8 ? 8 : 16;
  return bucket === 1 || bucket >= 8 ? `decode${bucket}` : `decode${bucket}${runs > 1 ? ' gaps' : ''}`;
}

/**
 * Runs of consecutive slots (llama.cpp's passes over the weights for a decode step, with one KV
 * stream per sequence), a hole of up to `fill` idle slots not breaking a run (ENGINE_GAP_FILL
 * fills it).
 */
export function slotRuns(slots: readonly number[], fill: number): number {
  if (slots.length < 2) return slots.length;
  const sorted = [...slots].sort((a, b) => a - b);
  let runs = 1;
  for (let k = 1; k < sorted.length; k++) if (sorted[k] - sorted[k - 1] - 1 > fill) runs++;
  return runs;
}

/** Thread counts worth comparing under `max` threads: all of them, half, and one. */
export function threadCandidates(max: number): number[] {
  const m = Math.max(1, Math.floor(max));
  return [...new Set([m, Math.ceil(m / 2), 1])];
}

/**
 * Per kind of step: its steps so far, the last try of each candidate (its step, its clock time),
 * the tries not reported yet, each candidate's backoff, and how often each was asked for while
 * warming up.
 */
interface ExploreState {
  steps: number;
  warmAsks: Map<number, number>;
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
 * tries another (the slower it measured, the rarer) to notice when the machine changes. With
 * `splitDecode`, small decode steps (two sequences; up to four with one thread) also have a split
 * variant (the most threads, one decode call per token), and with `padDecode` steps of five to
 * seven sequences a pad variant (the most threads, padded to eight tokens), measured and chosen
 * the same way. Pure bookkeeping: the caller measures and applies.
 */
export class AdaptiveThreadPolicy {
  /** Thread counts, most first. */
  readonly #candidates: readonly number[];
  /** Candidate keys (keyOf) of the kinds that split, of those that pad, and of the others. */
  readonly #splitVariants: readonly number[];
  readonly #padVariants: readonly number[];
  readonly #variants: readonly number[];
  readonly #splitKinds: ReadonlySet<string>;
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
    this.#candidates = options.fixedThreads ? [Math.max(1, Math.floor(maxThreads))] : threadCandidates(maxThreads);
    this.#variants = this.#candidates.map((t) => keyOf(t, Mode.Plain));
    // Split and pad at the most threads only: each variant is one more to try now and then (a
    // 1-thread split variant, never the best on an idle 2-core VM, took 2.4% of a two-stream
    // load's steps).
    this.#splitVariants = options.splitDecode ? [...this.#variants, keyOf(this.#candidates[0], Mode.Split)] : this.#variants;
    this.#padVariants = options.padDecode ? [...this.#variants, keyOf(this.#candidates[0], Mode.Pad)] : this.#variants;
    this.#splitKinds = this.#candidates[0] === 1 ? SPLIT_KINDS_ONE_THREAD : SPLIT_KINDS;
    this.#exploreEvery = Math.max(2, options.exploreEvery ?? 32);
    this.#window = Math.max(1, Math.floor(options.window ?? 8));
    this.#minExploreMs = options.minExploreMs ?? 250;
    this.#maxExploreMs = options.maxExploreMs ?? 30_000;
    this.#now = options.now ?? (() => performance.now());
    this.#warmup = Math.max(1, options.warmup ?? 3);
  }

  /** Whether the policy chooses anything (more than one thread count, split or pad variants). */
  get chooses(): boolean {
    return this.#splitVariants.length > 1 || this.#padVariants.length > 1;
  }

  /** How to run a step of `sequences` sequences and `tokens` tokens, in `runs` runs of consecutive sequence ids (default 1). */
  choose(sequences: number, tokens: number, runs = 1): StepPlan {
    const kind = stepKind(sequences, tokens, runs);
    const variants = this.#variantsOf(kind);
    if (variants.length === 1) return planOf(variants[0]);
    const table = this.#table(kind);
    const state = this.#kind(kind);
    state.steps++;
    // Until each candidate has a few measurements, take them in turn (best guess first). Not for
    // prompt steps: each is a request's time to first token, so only the best guess (every core)
    // warms up there and the others are measured by exploration, one step at a time.
    const prompt = kind.startsWith('prompt');
    for (const key of prompt ? variants.slice(0, 1) : variants) {
      if ((table.get(key)?.samples ?? 0) >= this.#warmup) continue;
      // A variant the engine does not run when asked (padding with no idle slot beside the run or
      // a model that takes no throwaway tokens; the step is then reported as run plainly) would be
      // asked for at every step: after WARMUP_ASKS times its warm-up without a figure, it waits for
      // the exploration rules below. A figure of it opens its warm-up again.
      const asks = state.warmAsks.get(key) ?? 0;
      if (asks >= WARMUP_ASKS * this.#warmup) continue;
      state.warmAsks.set(key, asks + 1);
      return planOf(key);
    }
    const best = this.#best(table, variants);
    const bestMs = table.get(best)?.msPerToken ?? Infinity;
    // Exploring a candidate k times slower than the best costs (k - 1) steps' extra time, so it is
    // explored every exploreEvery * (k - 1) steps of its kind: exploration never takes more than
    // about 1/exploreEvery of the time, however bad the alternative is right now (2 threads on a
    // 2-core machine with another busy process can be 30x slower than 1), and a close one is
    // measured often enough for its median to stay current. Steps are counted per kind: prompt
    // chunks are rare, and counting every step would explore at nearly every one of them.
    // These bounds hold for all of a kind's alternatives together (each is tried `alternatives`
    // times less often): with split variants a small decode step has three candidates, and each
    // paced as if alone, 7.9% of a two-client load's decode steps were tries, about 6% of its
    // time (2026-12-02; 23% of its steps with a split variant of every count and unshared floors).
    const alternatives = variants.length - 1;
    for (const key of variants) {
      if (key === best) continue;
      // A try whose figure has not come back yet (the engine's own loop applies a choice a step
      // later, and reports it a step after that) is not a reason to try again.
      const awaiting = state.awaiting.get(key);
      if (awaiting !== undefined && state.steps - awaiting < 4) continue;
      const ratio = Math.max(1, (table.get(key)?.msPerToken ?? Infinity) / bestMs);
      const since = state.steps - (state.explored.get(key) ?? 0);
      // The time rule counts from the later of its last figure and its last try: a try whose step
      // turned out to be of another kind (the engine packed fewer prompts into it than were
      // waiting) brings no figure for this kind, and the rule would otherwise fire again at every
      // step of this kind (seen: 10 of 396 steps at 8 streams were such 1-thread prompt steps).
      const measuredAt = Math.max(table.get(key)?.time ?? -Infinity, state.triedAt.get(key) ?? -Infinity);
      // Only close candidates back off: a far one (another busy process) is already tried rarely,
      // and must be tried on time to notice the machine freeing up.
      const backoff = ratio < 2 ? (state.backoff.get(key) ?? 1) : 1;
      const extraMs = (ratio - 1) * bestMs * tokens * backoff * alternatives;
      // In time, tries cost at most ~1/(4 x exploreEvery): most of the steps a time rule sees are
      // prompt chunks, and a try there is a longer time to first token for that request.
      // Prompt steps are tried less often (a try is a user's slower first token): at most every
      // 64 of them and 10 s, and on fewer threads only while the decode steps leave it open
      // (#fewerThreadsLose).
      const minMs = (prompt ? Math.max(this.#minExploreMs, PROMPT_MIN_EXPLORE_MS) : this.#minExploreMs) * alternatives;
      const afterMs = Math.min(this.#maxExploreMs, Math.max(minMs, 4 * this.#exploreEvery * extraMs));
      const minSteps = (prompt ? 64 : 16) * alternatives;
      const now = this.#now();
      const due = (Number.isFinite(ratio) && since >= Math.max(minSteps, this.#exploreEvery * (ratio - 1) * backoff * alternatives)) || now - measuredAt >= afterMs;
      if (due && !(prompt && threadsOf(key) < threadsOf(best) && this.#fewerThreadsLose())) {
        state.explored.set(key, state.steps);
        state.triedAt.set(key, now);
        state.awaiting.set(key, state.steps);
        return planOf(key);
      }
    }
    return planOf(best);
  }

  /**
   * Reports how long a step of `sequences` items and `tokens` tokens (throwaway ones not counted)
   * on `threads` took to compute (ms), and whether it ran split or padded (as the engine reports it).
   */
  record(sequences: number, tokens: number, threads: number, computeMs: number, split = false, runs = 1, padded = false): void {
    const kind = stepKind(sequences, tokens, runs);
    const variants = this.#variantsOf(kind);
    const key = keyOf(threads, split ? Mode.Split : padded ? Mode.Pad : Mode.Plain);
    if (!(computeMs > 0) || tokens < 1 || !variants.includes(key)) return;
    const table = this.#table(kind);
    const state = this.#kind(kind);
    const tried = state.awaiting.delete(key);
    state.warmAsks.delete(key);
    const bestBefore = table.size ? this.#best(table, variants) : null;
    const now = state.steps;
    const perToken = computeMs / tokens;
    let e = table.get(key);
    if (!e) table.set(key, (e = { msPerToken: perToken, recent: [], samples: 0, at: now, time: 0 }));
    // The estimate is the median of the latest measurements: one slow step is usually a
    // preemption (on 2 cores any other runnable thread stalls ggml's barrier, and a 3.7 ms step
    // takes 15-40 ms now and then), not a slower thread count, so spikes, even a few in a row,
    // do not tip the choice, while a lasting change (another busy process) does within a few
    // steps. A candidate that was slow (so explored rarely) and now measures faster than every
    // other one starts afresh: its old figures describe a machine that has changed, and it must
    // win back at once when the machine is free again (if that was a fluke, its next steps push
    // it back down). Figures older than a long pause are dropped too.
    let others = Infinity;
    for (const [t, other] of table) if (t !== key) others = Math.min(others, other.msPerToken);
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
    const bestAfter = this.#best(table, variants);
    if (bestAfter !== bestBefore) state.backoff.clear();
    else if (tried && key !== bestAfter) state.backoff.set(key, Math.min(MAX_BACKOFF, 2 * (state.backoff.get(key) ?? 1)));
  }

  /** Current estimates (ms per token by kind of step and threads; `2s` = 2 threads, split; `2p` = padded), for diagnostics and tests. */
  snapshot(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const [kind, table] of this.#estimates) {
      out[kind] = Object.fromEntries([...table].map(([key, e]) => [label(key), e.msPerToken]));
    }
    return out;
  }

  /**
   * Whether the decode steps say that fewer threads than the most lose on this machine now: at
   * least one decode kind has compared two thread counts, and in every one that has, the best
   * runs the most threads. A prompt step is then not tried on fewer threads: that try is a user's
   * first token, about twice as late on 2 cores, and it only tells what the decode steps already
   * do (a prompt step gains more from threads than a decode step, so where more threads win a
   * decode step they win a prompt step too; another busy process shows first in the decode steps,
   * tried every few seconds, and then prompt steps are tried again). Without it, the time rule
   * made the first prompt after every pause of 10 s a 1-thread try: on a server asked now and
   * then, nearly every request (measured, 2-core zen3 VM: the first request after a 12 s pause
   * 105-109 ms to first token against 54-60 for the next ones).
   */
  #fewerThreadsLose(): boolean {
    let compared = false;
    for (const [kind, table] of this.#estimates) {
      if (kind.startsWith('prompt')) continue;
      let counts = 0;
      for (const [key, e] of table) if ((key & 3) === Mode.Plain && e.samples > 0) counts++;
      if (counts < 2) continue;
      compared = true;
      if (threadsOf(this.#best(table, this.#variantsOf(kind))) < this.#candidates[0]) return false;
    }
    return compared;
  }

  #variantsOf(kind: string): readonly number[] {
    return this.#splitKinds.has(kind) ? this.#splitVariants : PAD_KINDS.has(kind) ? this.#padVariants : this.#variants;
  }

  #kind(kind: string): ExploreState {
    let state = this.#explorations.get(kind);
    if (!state) this.#explorations.set(kind, (state = { steps: 0, warmAsks: new Map(), explored: new Map(), triedAt: new Map(), awaiting: new Map(), backoff: new Map() }));
    return state;
  }

  #table(kind: string): Map<number, Estimate> {
    let table = this.#estimates.get(kind);
    if (!table) this.#estimates.set(kind, (table = new Map()));
    return table;
  }

  #best(table: Map<number, Estimate>, variants: readonly number[]): number {
    let best = variants[0];
    let bestMs = Infinity;
    for (const key of variants) {
      const ms = (table.get(key)?.msPerToken ?? Infinity) * (threadsOf(key) < this.#candidates[0] ? FEWER_THREADS_MARGIN : 1);
      if (ms < bestMs) {
        best = key;
        bestMs = ms;
      }
    }
    return best;
  }
}
