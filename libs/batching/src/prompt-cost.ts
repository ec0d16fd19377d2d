import type { DecodeRuntime } from './batching.types';

/** What evaluating a prompt step costs on this machine, as c(n) = fixedMs + perTokenMs * n. */
export interface PromptCost {
  /**
   * The part that does not grow with the step's tokens, measured with an empty cache (in a busy
   * server attention over the other slots' cells adds to it), ms.
   */
  readonly fixedMs: number;
  /** Each prompt token's own part, ms. */
  readonly perTokenMs: number;
}

export interface MeasurePromptCostOptions {
  /** The two prompt lengths evaluated. Defaults 32 and 128 (clamped to the batch and the context). */
  readonly short?: number;
  readonly long?: number;
  /** Evaluations of each length; the fastest counts. Default 3. */
  readonly tries?: number;
  /** Slot whose KV cells the measurement uses (emptied before and after). Default 0. */
  readonly slot?: number;
  /**
   * Whole measurements made before giving up when the lengths cannot be told apart. Default 1.
   * Another process computing on the same cores (a second server warming up next to this one)
   * can make the long prompts' fastest evaluation no slower than the short ones'; seen on a
   * 2-core VM with two servers loading at once, where the second measurement succeeded.
   */
  readonly attempts?: number;
}

/**
 * Measures c(n) for prompt steps: evaluates a short and a long prompt as a request's prompt is
 * evaluated (logits of its last token), once unmeasured first (graph allocation), then each
 * `tries` times in turn, keeping the fastest of each (a slow one is another process, not the
 * step). Uses the engine's own compute time when the runtime reports it. Must run while the
 * runtime is idle (before the scheduler takes requests); leaves the slot empty. Null when the two
 * lengths cannot be told apart (a runtime too fast to time, a context too small) in any of the
 * `attempts`: the caller keeps its default.
 */
export async function measurePromptCost(runtime: DecodeRuntime, filler: readonly number[], options: MeasurePromptCostOptions = {}): Promise<PromptCost | null> {
  const long = Math.min(options.long ?? 128, runtime.batchSize, runtime.contextSize);
  const short = Math.min(options.short ?? 32, Math.floor(long / 2));
  const slot = options.slot ?? 0;
  // Nothing to measure with: no attempt would do better.
  if (filler.length === 0 || short < 8) return null;
  const tokens = (n: number) => Array.from({ length: n }, (_, i) => filler[i % filler.length]);
  const evaluate = async (n: number): Promise<number> => {
    runtime.truncate(slot, 0);
    const started = performance.now();
    const report = await runtime.decode([{ slot, tokens: tokens(n), position: 0, logits: true }]);
    const wall = performance.now() - started;
    return report && report.computeMs !== undefined ? report.computeMs : wall;
  };
  try {
    // Unmeasured, once: the first evaluation meets graph allocation.
    await evaluate(long);
    for (let attempt = 1; ; attempt++) {
      let shortMs = Infinity;
      let longMs = Infinity;
      for (let i = 0; i < Math.max(1, options.tries ?? 3); i++) {
        shortMs = Math.min(shortMs, await evaluate(short));
        longMs = Math.min(longMs, await evaluate(long));
      }
      const perTokenMs = (longMs - shortMs) / (long - short);
      if (perTokenMs > 0 && Number.isFinite(perTokenMs)) return { fixedMs: Math.max(0, shortMs - perTokenMs * short), perTokenMs };
      if (attempt >= Math.max(1, options.attempts ?? 1)) return null;
    }
  } finally {
    runtime.truncate(slot, 0);
  }
}

/**
 * Default time budget of the prompts packed into one step when prompts queue
 * ({@link busyPromptPackTokens}), ms. Chosen by measurement (docs/PERFORMANCE.md, 2026-12-01):
 * on a 2-core AMX CPU (0.27 ms a prompt token), 145 tokens a step (~40 ms) against 16, alternated
 * six times with llama-server: 4.7% / 7.6% more throughput at 4 / 8 streams (every round), time
 * to first token (median) 74 / 101 ms instead of 56 / 68 (llama-server: 77 / 171 ms).
 */
export const PROMPT_PACK_BUDGET_MS = 40;

/**
 * Packed prompt work at most this many times a step's fixed cost (see busyPromptPackTokens): the
 * AMX VM's ~4 ms (measured with an empty cache) keeps the whole budget, a tiny model's ~0 none.
 */
const PACK_FIXED_MULTIPLE = 10;

/**
 * Prompt tokens of different requests that may share a step while prompts queue (Scheduler's
 * busyPromptPackTokens) on a machine with this prompt cost: as many as fit in `budgetMs` of
 * prompt work and in ten times the step's fixed cost, at least `floor`, at most the batch. Evaluating prompts that arrive
 * together in one step saves the fixed cost once for each (throughput: fewer steps, and fewer
 * pauses for the streams already running) and delays the first of them by the others' work.
 * Bounding that work in time, not in tokens, holds on every machine: where a prompt token costs
 * ~0.9 ms (110M Q8_0 on 2 zen4 cores) that is one short prompt a step, as before; with matrix
 * units (AMX, 0.26 ms) a few; on a GPU about the whole batch. Where the fixed cost is negligible
 * (a tiny model) packing saves nothing: the second bound keeps it at `floor` there.
 */
export function busyPromptPackTokens(cost: PromptCost, batchSize: number, floor = 1, budgetMs = PROMPT_PACK_BUDGET_MS): number {
  const workMs = Math.min(budgetMs, PACK_FIXED_MULTIPLE * cost.fixedMs);
  const fit = cost.perTokenMs > 0 ? Math.floor(workMs / cost.perTokenMs) : batchSize;
  return Math.max(1, Math.min(batchSize, Math.max(floor, fit)));
}
