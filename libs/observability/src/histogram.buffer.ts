import type { Histogram, LabelValues } from 'prom-client';

/** Buffers of each histogram, flushed by the histogram's `collect` hook (see {@link flushBuffersOf}). */
const BUFFERS = new WeakMap<object, Set<HistogramBuffer>>();

/** Observations a buffer holds before it hands them over by itself (8 KB of doubles). */
const CAPACITY = 1024;

/**
 * The observations of one labelled series of a prom-client histogram, kept in a typed array and
 * handed to prom-client in one loop when the histogram is read (a scrape, the admin status
 * route) or when the buffer is full.
 *
 * Why: the scheduler observes six histograms a decode step, and a prom-client observation with
 * labels allocates a closure and a label object, validates the labels and hashes them into a
 * string key every time. Between two steps ggml streams the whole model through the caches, so
 * that work runs cache-cold: 7% of Node's main-thread CPU at one stream in a `perf` call graph
 * (2026-12-03), and on a CPU every microsecond of that thread is taken from a decode. Appending
 * to an array is a store; the same observations made back to back at a scrape run warm.
 *
 * What a scrape shows is unchanged: the histogram flushes its buffers before it is read. A value
 * prom-client would refuse (not finite) is refused here, when observed, as prom-client does.
 */
export class HistogramBuffer<T extends string = string> {
  readonly #histogram: Histogram<T>;
  readonly #labels: LabelValues<T>;
  readonly #values = new Float64Array(CAPACITY);
  #count = 0;

  constructor(histogram: Histogram<T>, labels: LabelValues<T>) {
    this.#histogram = histogram;
    this.#labels = labels;
    let buffers = BUFFERS.get(histogram);
    if (!buffers) BUFFERS.set(histogram, (buffers = new Set()));
    buffers.add(this as HistogramBuffer);
  }

  observe(value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
    if (this.#count === CAPACITY) this.flush();
    this.#values[this.#count++] = value;
  }

  /** Hands the buffered observations to prom-client. */
  flush(): void {
    const n = this.#count;
    // Reset first: an observation that threw (it cannot: checked on the way in) would not be replayed.
    this.#count = 0;
    for (let i = 0; i < n; i++) this.#histogram.observe(this.#labels, this.#values[i]);
  }

  /** Flushes, then stops being flushed by the histogram's reads (the series' model went away). */
  close(): void {
    this.flush();
    BUFFERS.get(this.#histogram)?.delete(this as HistogramBuffer);
  }
}

/**
 * A histogram's `collect` hook (prom-client calls it before every read of the metric): brings
 * its buffered observations in. Set it on the histograms {@link HistogramBuffer} is used with.
 */
export function flushBuffersOf(this: object): void {
  const buffers = BUFFERS.get(this);
  if (buffers) for (const buffer of buffers) buffer.flush();
}
