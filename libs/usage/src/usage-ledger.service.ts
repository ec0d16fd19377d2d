import { Inject, Injectable, Logger, OnApplicationShutdown, OnModuleInit, Optional } from '@nestjs/common';
import type { UsageConfig } from './usage.config';
import { randomUUID } from 'node:crypto';
import type { Counter, Gauge, Histogram } from 'prom-client';
import { AppConfig } from '@app/common';
import { Clock, DAY_MS, hourOf } from './clock';
import { UsageRepository } from './usage.repository';
import { UsageBucket, UsageCounts, UsageRecord } from './usage.types';

/** The ledger's own series (see METRIC in the observability library); each is optional. */
export interface UsageLedgerMetrics {
  readonly flushDuration?: Histogram;
  readonly flushFailures?: Counter;
  readonly dropped?: Counter;
  readonly buffered?: Gauge;
}

export const USAGE_LEDGER_METRICS = Symbol('USAGE_LEDGER_METRICS');

/** What the ledger holds in memory, for metrics, the admin API and tests. */
export interface LedgerStats {
  /** Buckets waiting to be written (new ones and failed batches). */
  readonly buffered: number;
  /** Failed batches kept for the next flush. */
  readonly pendingBatches: number;
  /** Age of the oldest usage not yet written, in seconds (0 when none). */
  readonly lagSeconds: number;
  readonly flushes: number;
  readonly failures: number;
  readonly dropped: number;
  readonly lastFlushAt: number | null;
}

interface Batch {
  readonly id: string;
  readonly buckets: readonly UsageBucket[];
  /** Clock time of the oldest record in the batch. */
  readonly oldest: number;
}

type MutableBucket = { -readonly [K in keyof UsageBucket]: UsageBucket[K] };

/** Errors are logged at most this often while the database stays unreachable. */
const LOG_EVERY_MS = 30_000;
/** Budget counters and batch ids older than this are deleted (once a day). */
const PRUNE_AFTER_MS = 40 * DAY_MS;

/**
 * The usage ledger: per key, model, route and UTC hour, requests, prompt tokens (and how many came
 * from a KV cache), completion tokens, response-cache hits and errors.
 *
 * `record()` is synchronous and never touches the database: it adds to an in-memory bucket. Every
 * USAGE_FLUSH_INTERVAL_MS the buckets become one batch written in one transaction (exactly once:
 * the batch id is stored with it), and at shutdown after the drain, so a clean stop loses nothing
 * and a crash loses at most one interval. While the database is unreachable, batches are kept
 * and retried in order; the memory they hold is bounded by USAGE_BUFFER_MAX buckets, beyond which
 * usage of new buckets is dropped and counted (`llm_usage_dropped_total`); usage of a bucket
 * already held still adds up.
 */
@Injectable()
export class UsageLedgerService implements OnModuleInit, OnApplicationShutdown {
  readonly #logger = new Logger('UsageLedger');
  #buffer = new Map<string, MutableBucket>();
  #bufferOldest: number | null = null;
  readonly #pending: Batch[] = [];
  #flushing: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #flushes = 0;
  #failures = 0;
  #dropped = 0;
  #lastFlushAt: number | null = null;
  #lastError = 0;
  #lastDropLog = 0;
  #lastPrune = 0;
  #closed = false;

  constructor(
    private readonly repo: UsageRepository,
    @Inject(AppConfig) private readonly config: UsageConfig,
    private readonly clock: Clock,
    @Optional() @Inject(USAGE_LEDGER_METRICS) private readonly metrics: UsageLedgerMetrics = {},
  ) {}

  async onModuleInit(): Promise<void> {
    try {
      await this.repo.ready();
    } catch (err) {
      // Like the key store: a database that is down at start may come back; flushes retry.
      this.#logger.error(`Usage tables unavailable (${(err as Error).message}): usage is buffered until the database answers`);
    }
    this.#timer = setInterval(() => void this.flush(), this.config.usageFlushIntervalMs);
    this.#timer.unref();
  }

  /** After the drain (HealthService, beforeApplicationShutdown) and the HTTP server closed: nothing records any more. */
  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
    this.#closed = true;
    if (this.stats().buffered > 0) this.#logger.error(`Shutting down with ${this.stats().buffered} usage bucket(s) not written (database unreachable)`);
    await this.repo.close().catch(() => undefined);
  }

  /** Adds one request's usage. Synchronous and never throws: the request path never waits on the ledger. */
  record(record: UsageRecord): void {
    const at = record.at ?? this.clock.now();
    const hour = hourOf(at);
    const id = `${record.keyId}\u0000${record.model}\u0000${record.route}\u0000${hour}`;
    let bucket = this.#buffer.get(id);
    if (!bucket) {
      if (this.#bufferedBuckets() >= this.config.usageBufferMax || this.#closed) {
        this.#drop();
        return;
      }
      bucket = { keyId: record.keyId, model: record.model, route: record.route, hour, requests: 0, promptTokens: 0, cachedPromptTokens: 0, completionTokens: 0, cacheHits: 0, errors: 0 };
      this.#buffer.set(id, bucket);
      this.metrics.buffered?.set(this.#bufferedBuckets());
    }
    const add: Partial<UsageCounts> = record;
    bucket.requests += count(record.requests ?? 1);
    bucket.promptTokens += count(add.promptTokens);
    bucket.cachedPromptTokens += count(add.cachedPromptTokens);
    bucket.completionTokens += count(add.completionTokens);
    bucket.cacheHits += count(add.cacheHits);
    bucket.errors += count(add.errors);
    this.#bufferOldest ??= this.clock.now();
  }

  /**
   * Writes what is buffered: failed batches first, in order, then the current buffer as a new
   * batch. Concurrent calls run one after the other. Never rejects: a failure is logged,
   * counted, and the batch kept for the next flush.
   */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#flushOnce());
    return this.#flushing;
  }

  stats(): LedgerStats {
    const oldest = Math.min(this.#pending[0]?.oldest ?? Infinity, this.#bufferOldest ?? Infinity);
    return {
      buffered: this.#bufferedBuckets(),
      pendingBatches: this.#pending.length,
      lagSeconds: Number.isFinite(oldest) ? Math.max(0, (this.clock.now() - oldest) / 1000) : 0,
      flushes: this.#flushes,
      failures: this.#failures,
      dropped: this.#dropped,
      lastFlushAt: this.#lastFlushAt,
    };
  }

  async #flushOnce(): Promise<void> {
    if (this.#buffer.size > 0) {
      this.#pending.push({ id: randomUUID(), buckets: [...this.#buffer.values()], oldest: this.#bufferOldest ?? this.clock.now() });
      this.#buffer = new Map();
      this.#bufferOldest = null;
    }
    while (this.#pending.length > 0) {
      const batch = this.#pending[0];
      const started = performance.now();
      try {
        await this.repo.ready();
        await this.repo.write(batch.id, batch.buckets);
        this.#pending.shift();
        this.#flushes++;
        this.#lastFlushAt = this.clock.now();
        if (this.#failures > 0 && this.#lastError > 0) {
          this.#logger.log(`Usage ledger writes are back (${this.#pending.length} batch(es) still to write)`);
          this.#lastError = 0;
        }
      } catch (err) {
        this.#failures++;
        this.metrics.flushFailures?.inc();
        const now = Date.now();
        if (now - this.#lastError >= LOG_EVERY_MS) {
          this.#lastError = now;
          this.#logger.error(`Could not write usage (${(err as Error).message}); ${this.#bufferedBuckets()} bucket(s) kept and retried`);
        }
        return;
      } finally {
        this.metrics.flushDuration?.observe((performance.now() - started) / 1000);
        this.metrics.buffered?.set(this.#bufferedBuckets());
      }
    }
    await this.#prune();
  }

  async #prune(): Promise<void> {
    const now = this.clock.now();
    if (now - this.#lastPrune < DAY_MS) return;
    this.#lastPrune = now;
    await this.repo.prune(now - PRUNE_AFTER_MS).catch((err: Error) => this.#logger.warn(`Usage housekeeping failed: ${err.message}`));
  }

  #bufferedBuckets(): number {
    let n = this.#buffer.size;
    for (const batch of this.#pending) n += batch.buckets.length;
    return n;
  }

  #drop(): void {
    this.#dropped++;
    this.metrics.dropped?.inc();
    const now = Date.now();
    if (now - this.#lastDropLog >= LOG_EVERY_MS) {
      this.#lastDropLog = now;
      this.#logger.error(`Usage buffer full (USAGE_BUFFER_MAX=${this.config.usageBufferMax} buckets, database unreachable): usage dropped (${this.#dropped} so far)`);
    }
  }
}

/** A count as given: whole and not negative (a bad value counts 0 rather than corrupting a sum). */
function count(n: number | undefined): number {
  return n !== undefined && Number.isFinite(n) && n > 0 ? Math.round(n) : 0;
}
