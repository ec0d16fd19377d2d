import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The reliability suites run in two sizes: `short` inside `npm test` (CI) and `full` from
 * `npm run test:reliability -- --full`. Every count below scales with it; nothing else changes.
 */
export const FULL = process.env.RELIABILITY_PROFILE === 'full';
export const PROFILE = FULL ? 'full' : 'short';

/** Picks the short or the full figure. */
export const size = (short: number, full: number): number => (FULL ? full : short);

/** One line of the summary table: what was tried, how many times, what came out. */
export interface Figure {
  readonly section: 'hostile input' | 'load' | 'faults' | 'security';
  readonly check: string;
  readonly tried: number | string;
  readonly result: string;
  readonly ok: boolean;
}

/**
 * Appends a measured figure to `$RELIABILITY_OUT/figures.jsonl` (set by
 * scripts/reliability.js); a no-op inside a plain `npm test`, whose figures are not kept.
 */
export function record(figure: Figure): void {
  const dir = process.env.RELIABILITY_OUT;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  appendFileSync(join(dir, 'figures.jsonl'), JSON.stringify({ ...figure, profile: PROFILE }) + '\n');
}

/** Resident set size of a process in MiB, read from /proc (Linux). */
export function rssMiB(pid: number): number {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const status: string = require('node:fs').readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}
