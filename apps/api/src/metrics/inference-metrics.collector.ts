import { Injectable, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import type { Gauge } from 'prom-client';
import { InferenceService } from '@app/inference';
import { METRIC, MetricsService } from '@app/observability';

/** Reads the model's state and KV-cache occupancy into their gauges before each scrape. */
@Injectable()
export class InferenceMetricsCollector implements OnModuleInit, OnModuleDestroy {
  #unregister: (() => void) | undefined;

  constructor(
    private readonly inference: InferenceService,
    private readonly metrics: MetricsService,
    @InjectMetric(METRIC.modelReady) private readonly modelReady: Gauge,
    @InjectMetric(METRIC.modelInfo) private readonly modelInfo: Gauge<'model' | 'backend' | 'engine' | 'threads'>,
    @InjectMetric(METRIC.kvCacheTokens) private readonly kvTokens: Gauge,
    @InjectMetric(METRIC.kvCacheCapacity) private readonly kvCapacity: Gauge,
  ) {}

  onModuleInit(): void {
    this.#unregister = this.metrics.addCollector(() => this.collect());
  }

  onModuleDestroy(): void {
    this.#unregister?.();
  }

  collect(): void {
    const ready = this.inference.state === 'ready';
    this.modelReady.set(ready ? 1 : 0);
    if (!ready) {
      this.kvTokens.set(0);
      return;
    }
    const model = this.inference.model;
    this.kvTokens.set(this.inference.kvCacheTokens);
    this.kvCapacity.set(model.contextSize * model.slots);
    this.modelInfo.reset();
    this.modelInfo.set({ model: model.id, backend: model.gpu || 'cpu', engine: model.engine, threads: String(model.threads) }, 1);
  }
}
