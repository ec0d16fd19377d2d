import { Injectable, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import type { Gauge } from 'prom-client';
import { METRIC, MetricsService } from '@app/observability';
import { UsageLedgerService } from './usage-ledger.service';

/** Sets `llm_usage_flush_lag_seconds` and `llm_usage_buffered_buckets` from the ledger before each scrape. */
@Injectable()
export class UsageMetricsCollector implements OnModuleInit, OnModuleDestroy {
  #unregister: (() => void) | undefined;

  constructor(
    private readonly ledger: UsageLedgerService,
    private readonly metrics: MetricsService,
    @InjectMetric(METRIC.usageFlushLag) private readonly lag: Gauge,
    @InjectMetric(METRIC.usageBuffered) private readonly buffered: Gauge,
  ) {}

  onModuleInit(): void {
    this.lag.set(0);
    this.buffered.set(0);
    this.#unregister = this.metrics.addCollector(() => {
      const stats = this.ledger.stats();
      this.lag.set(stats.lagSeconds);
      this.buffered.set(stats.buffered);
    });
  }

  onModuleDestroy(): void {
    this.#unregister?.();
  }
}
