import { createWriteStream, type WriteStream } from 'node:fs';
import type { StepView } from './scheduler.telemetry';

/**
 * STEP_TRACE_FILE: one JSON line per engine step, appended through a buffered stream (the write
 * happens off the step's path; a step costs one JSON.stringify here). For performance work: the
 * metrics' histograms say how long steps take, the trace says which steps (how many prompt items
 * and decode streams each held) took how long, in order. `scripts/step-trace-summary.mjs` sums it
 * up by step shape, and reads llama-server's decode calls traced by `scripts/llama-decode-trace.c`
 * the same way.
 */
export class StepTrace {
  #out: WriteStream | undefined;
  #failed = false;

  constructor(private readonly file: string) {}

  write(model: string, step: StepView): void {
    if (this.#failed) return;
    this.#out ??= this.#open();
    const line = {
      // The wall clock, to line steps up with logs. Not timeOrigin + performance.now(): that is a
      // monotonic clock anchored at process start and drifts from the wall clock whenever the host
      // steps it (a VM resumed from a snapshot was 16 s behind in CI). The order is the file's.
      t: Date.now(),
      model,
      ms: round(step.ms),
      computeMs: step.computeMs === undefined ? null : round(step.computeMs),
      hostMs: step.hostMs === undefined ? null : round(step.hostMs),
      threads: step.threads ?? null,
      tokens: step.tokens,
      sequences: step.sequences ?? null,
      prompts: step.prompts ?? null,
      filled: step.filledTokens ?? 0,
    };
    this.#out.write(JSON.stringify(line) + '\n');
  }

  close(): Promise<void> {
    const out = this.#out;
    this.#out = undefined;
    return out ? new Promise((resolve) => out.end(resolve)) : Promise.resolve();
  }

  #open(): WriteStream {
    const out = createWriteStream(this.file, { flags: 'a' });
    // A trace that cannot be written (no such folder, disk full) stops tracing; serving goes on.
    out.on('error', () => {
      this.#failed = true;
      this.#out = undefined;
    });
    return out;
  }
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;
