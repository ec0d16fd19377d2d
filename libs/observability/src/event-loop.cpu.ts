import { readFileSync } from 'node:fs';

/** Linux's per-thread scheduler statistics of the main thread (whose task id is the process id). */
export const MAIN_THREAD_SCHEDSTAT = `/proc/self/task/${process.pid}/schedstat`;

/**
 * CPU time Node's main thread (the event loop: HTTP, JSON, validation, the scheduler's
 * bookkeeping, the SSE writes; not ggml's threads, libuv's pool or the GC's helpers) has used so
 * far, in seconds; null where the kernel does not say (not Linux, or a kernel without schedstat).
 *
 * Why it is worth a series: on a machine whose cores ggml's threads already fill (the CPU
 * default), every millisecond of this thread is taken from a decode, and more than a millisecond
 * is lost (a preempted ggml thread holds the other at the next barrier; docs/PERFORMANCE.md,
 * 2026-12-03). process_cpu_seconds_total counts every thread and cannot show it.
 *
 * The first field of schedstat is the time on the CPU in nanoseconds (stat's utime and stime
 * count 10 ms ticks, too coarse for a benchmark round). One read costs ~11 µs: scrape time only.
 */
export function mainThreadCpuSeconds(path = MAIN_THREAD_SCHEDSTAT): number | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  const ns = Number(text.split(' ', 1)[0]);
  return Number.isFinite(ns) && ns >= 0 ? ns / 1e9 : null;
}
