import { Injectable, Logger } from '@nestjs/common';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import { collectDefaultMetrics, Counter, Gauge, register } from 'prom-client';
import { DependencyProbes } from './dependency.probes';
import { mainThreadCpuSeconds } from './event-loop.cpu';
import { METRIC } from './metrics.providers';
import { CACHE_KINDS, CACHE_RESULTS, CacheKind, CacheResult, RATE_LIMIT_KINDS, RateLimitKind, RequestTelemetry } from './request.telemetry';
import { withSpan } from './tracing.api';

/** Refreshes gauges that are read rather than pushed (model state, KV cache) just before a scrape. */
export type MetricsCollector = () => void | Promise<void>;

/** One series' samples as `/metrics` would show them (histograms: their `_count` and `_sum` only). */
export interface MetricSample {
  readonly labels: Readonly<Record<string, string | number>>;
  readonly value: number;
}

/**
 * The metrics API for the rest of the platform: response-cache lookups and rate-limit rejections
 * (counters with bounded labels, shown at 0 from the start so dashboards and alerts have a series),
 * and collectors run before each scrape. Request, scheduler and GPU series are recorded by the
 * HTTP middleware, the scheduler observer and the GPU monitor.
 */
@Injectable()
export class MetricsService {
  readonly #logger = new Logger('Metrics');
  readonly #collectors = new Set<MetricsCollector>();

  constructor(
    private readonly dependencies: DependencyProbes,
    @InjectMetric(METRIC.cacheLookups) private readonly cacheLookups: Counter<'cache' | 'result'>,
    @InjectMetric(METRIC.rateLimited) private readonly rateLimits: Counter<'kind'>,
    @InjectMetric(METRIC.dependencyUp) private readonly dependencyUp: Gauge<'dependency'>,
  ) {
    // Node process metrics (CPU, memory, event-loop lag, GC), once per process.
    if (!register.getSingleMetric('process_cpu_user_seconds_total')) collectDefaultMetrics();
    // The main thread's own CPU, read at each scrape; absent where the kernel does not say (not Linux).
    if (!register.getSingleMetric(METRIC.eventLoopCpu) && mainThreadCpuSeconds() !== null) {
      let counted = 0;
      new Counter({
        name: METRIC.eventLoopCpu,
        help: "CPU time of Node's main thread (the event loop: HTTP, JSON, the scheduler's bookkeeping, streaming writes), user + system, seconds",
        collect() {
          const now = mainThreadCpuSeconds();
          if (now !== null && now > counted) {
            this.inc(now - counted);
            counted = now;
          }
        },
      });
    }
    for (const cache of CACHE_KINDS) for (const result of CACHE_RESULTS) this.cacheLookups.inc({ cache, result }, 0);
    for (const kind of RATE_LIMIT_KINDS) this.rateLimits.inc({ kind }, 0);
  }

  /**
   * Counts one response-cache lookup and notes it on the request's log line (`cache`).
   * Call it from the cache code when it measures the lookup itself; see {@link traceCacheLookup}.
   */
  cacheLookup(cache: CacheKind, result: CacheResult): void {
    this.cacheLookups.inc({ cache, result });
    const telemetry = RequestTelemetry.current();
    if (telemetry) telemetry.cache = `${cache}:${result}`;
  }

  /**
   * Runs a cache lookup inside a `cache.lookup` span and counts it: a value is a hit, `undefined`
   * or `null` a miss, an exception an error (recorded on the span and rethrown).
   */
  traceCacheLookup<T>(cache: CacheKind, lookup: () => Promise<T | null | undefined>): Promise<T | null | undefined> {
    return withSpan(
      'cache.lookup',
      async (span) => {
        try {
          const value = await lookup();
          const result: CacheResult = value === undefined || value === null ? 'miss' : 'hit';
          span.setAttribute('cache.result', result);
          this.cacheLookup(cache, result);
          return value;
        } catch (err) {
          span.setAttribute('cache.result', 'error');
          this.cacheLookup(cache, 'error');
          throw err;
        }
      },
      { 'cache.kind': cache },
    );
  }

  /** Counts a request rejected by a rate limit and notes it on the request's log line. */
  rateLimited(kind: RateLimitKind): void {
    this.rateLimits.inc({ kind });
    const telemetry = RequestTelemetry.current();
    if (telemetry) telemetry.rateLimited = kind;
  }

  /** Registers a collector run before each scrape; returns a function that removes it. */
  addCollector(collector: MetricsCollector): () => void {
    this.#collectors.add(collector);
    return () => this.#collectors.delete(collector);
  }

  /**
   * The current samples of the named series, after the same refresh a scrape runs: the data
   * `/metrics` shows, as JSON (for the admin status route and the console). Unknown names are absent.
   */
  async read(names: readonly string[]): Promise<Record<string, MetricSample[]>> {
    await this.refresh();
    const out: Record<string, MetricSample[]> = {};
    for (const name of names) {
      const metric = register.getSingleMetric(name);
      if (!metric) continue;
      const { values } = await metric.get();
      out[name] = values
        .filter((v) => !('metricName' in v) || v.metricName === undefined || /_(count|sum)$/.test(String(v.metricName)))
        .map((v) => ({ labels: { ...v.labels, ...('metricName' in v && v.metricName ? { series: String(v.metricName) } : {}) }, value: v.value }));
    }
    return out;
  }

  /** Brings read-on-demand gauges up to date; a failing collector is logged, never fatal to the scrape. */
  async refresh(): Promise<void> {
    const dependencyChecks = this.dependencies.probes.map(async (probe) => {
      const result = await this.dependencies.check(probe);
      this.dependencyUp.set({ dependency: probe.name }, result.up ? 1 : 0);
    });
    const collectors = [...this.#collectors].map(async (collect) => {
      try {
        await collect();
      } catch (err) {
        this.#logger.warn(`metrics collector failed: ${(err as Error).message}`);
      }
    });
    await Promise.all([...dependencyChecks, ...collectors]);
  }
}
