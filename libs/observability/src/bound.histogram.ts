import type { Histogram, LabelValues } from 'prom-client';

/** What prom-client 15 keeps per label set of a histogram (`hashMap` values). */
interface Series {
  readonly labels: object;
  readonly bucketValues: Record<string, number>;
  sum: number;
  count: number;
}

/** The parts of prom-client's Histogram this module reads (not in its typings). */
interface HistogramInternals {
  hashMap?: Record<string, Series>;
  upperBounds?: readonly number[];
}

/**
 * `histogram.observe(labels, value)` for one fixed label set, at a fraction of its cost: the
 * series is found once, and an observation is a bucket search and three additions. prom-client's
 * own observe validates the labels, hashes them into a string key and turns the bucket's bound
 * into a property name on every call; the scheduler observes six histograms per decode step and
 * token, on the event loop that also writes every streamed token (each such microsecond is taken
 * from the decode on a small machine).
 *
 * Falls back to `observe()` whenever the series is not where it was found (a registry reset, or
 * a prom-client whose internals differ: bound.histogram.spec.ts compares both paths' output).
 */
export function boundHistogram<T extends string>(histogram: Histogram<T>, labels: LabelValues<T>): (value: number) => void {
  const internals = histogram as unknown as HistogramInternals;
  const bounds = internals.upperBounds;
  const names = bounds?.map((b) => String(b)) ?? [];
  let series: Series | undefined;
  let key: string | undefined;
  const find = (): Series | undefined => {
    series = undefined;
    key = undefined;
    const map = internals.hashMap;
    if (!map || !bounds) return undefined;
    for (const [k, s] of Object.entries(map)) {
      if (sameLabels(s.labels, labels) && names.every((n) => typeof s.bucketValues?.[n] === 'number')) {
        key = k;
        return (series = s);
      }
    }
    return undefined;
  };
  return (value: number): void => {
    // prom-client's own path rejects a value that is not a finite number.
    if (!Number.isFinite(value)) return histogram.observe(labels, value);
    let s = series;
    if (s === undefined || internals.hashMap?.[key as string] !== s) {
      // First use, or the registry was reset: find the series, created empty if need be.
      s = find();
      if (s === undefined) {
        histogram.zero(labels);
        s = find();
      }
      if (s === undefined) return histogram.observe(labels, value);
    }
    const b = bounds as readonly number[];
    let i = 0;
    while (i < b.length && value > b[i]) i++;
    if (i < b.length) s.bucketValues[names[i]] += 1;
    s.sum += value;
    s.count += 1;
  };
}

function sameLabels(a: object, b: object): boolean {
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => (a as Record<string, unknown>)[k] === (b as Record<string, unknown>)[k]);
}
