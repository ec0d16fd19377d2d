/**
 * Threads for one decode call, given the most the context may use (THREADS, or all cores with
 * the engine addon's persistent pool), the sequences in the call and its tokens.
 *
 * Measured on 2 cores (docs/PERFORMANCE.md, "Threads per step"): with a persistent pool every
 * step, single-sequence decode included, is fastest on all threads, so this returns the maximum.
 * It is kept as the one place to change that rule per step, with its unit test.
 */
export function threadsForStep(maxThreads: number, sequences: number, tokens: number): number {
  if (maxThreads <= 1 || sequences < 1 || tokens < 1) return Math.max(1, maxThreads);
  return maxThreads;
}
