import { Injectable, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import type { Gauge } from 'prom-client';
import { InferenceService } from '@app/inference';
import { METRIC, MetricsService } from '@app/observability';

const STATES = ['unloaded', 'loading', 'loaded', 'unloading', 'failed'] as const;

/**
 * Reads the models' state, memory and KV-cache occupancy into their gauges before each scrape:
 * `llm_model_ready` (the default model: readiness), and per model `llm_model_state`,
 * `llm_model_memory_bytes`, `llm_model_info`, `llm_kv_cache_tokens`, `llm_kv_cache_capacity_tokens`.
 */
@Injectable()
export class InferenceMetricsCollector implements OnModuleInit, OnModuleDestroy {
  #unregister: (() => void) | undefined;

  constructor(
    private readonly inference: InferenceService,
    private readonly metrics: MetricsService,
    @InjectMetric(METRIC.modelReady) private readonly modelReady: Gauge,
    @InjectMetric(METRIC.modelInfo) private readonly modelInfo: Gauge<'model' | 'backend' | 'engine' | 'threads'>,
    @InjectMetric(METRIC.kvCacheTokens) private readonly kvTokens: Gauge<'model'>,
    @InjectMetric(METRIC.kvCacheCapacity) private readonly kvCapacity: Gauge<'model'>,
    @InjectMetric(METRIC.modelState) private readonly modelState: Gauge<'model' | 'state'>,
    @InjectMetric(METRIC.modelMemory) private readonly modelMemory: Gauge<'model' | 'memory'>,
    @InjectMetric(METRIC.modelMemoryBudget) private readonly memoryBudget: Gauge<'memory'>,
  ) {}

  onModuleInit(): void {
    this.#unregister = this.metrics.addCollector(() => this.collect());
  }

  onModuleDestroy(): void {
    this.#unregister?.();
  }

  async collect(): Promise<void> {
    this.modelReady.set(this.inference.state === 'ready' ? 1 : 0);
    this.modelInfo.reset();
    this.kvTokens.reset();
    this.kvCapacity.reset();
    this.modelState.reset();
    this.modelMemory.reset();
    for (const m of this.inference.models()) {
      const model = m.spec.id;
      for (const state of STATES) this.modelState.set({ model, state }, m.state === state ? 1 : 0);
      if (m.memory) {
        this.modelMemory.set({ model, memory: 'ram' }, m.memory.ram);
        this.modelMemory.set({ model, memory: 'vram' }, m.memory.vram);
      }
      const d = m.descriptor;
      if (!d) continue;
      this.modelInfo.set({ model, backend: d.gpu || 'cpu', engine: d.engine, threads: String(d.threads) }, 1);
      const scheduler = this.inference.schedulerOf(model);
      if (d.kind === 'chat' && scheduler) {
        this.kvTokens.set({ model }, scheduler.kvTokens);
        this.kvCapacity.set({ model }, d.contextSize * d.slots);
      }
    }
    const { budget } = await this.inference.memory().catch(() => ({ budget: { ram: null, vram: null } }));
    this.memoryBudget.reset();
    if (budget.ram !== null) this.memoryBudget.set({ memory: 'ram' }, budget.ram);
    if (budget.vram !== null) this.memoryBudget.set({ memory: 'vram' }, budget.vram);
  }
}
