import { Injectable } from '@nestjs/common';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import type { Counter, Histogram } from 'prom-client';
import { METRIC } from './metrics.providers';

/** A model registry event (structurally the inference library's RegistryEvent: observability sits below it). */
export type ModelEventView =
  | { readonly type: 'loaded'; readonly id: string; readonly ms: number }
  | { readonly type: 'load_failed'; readonly id: string; readonly ms: number; readonly error: string }
  | { readonly type: 'unloaded'; readonly id: string; readonly reason: string };

/**
 * Model loads and unloads as metrics (provided under the inference library's
 * MODEL_EVENTS_OBSERVER token): `llm_model_loads_total{model,result}`,
 * `llm_model_load_duration_seconds{model}`, `llm_model_unloads_total{model,reason}`.
 */
@Injectable()
export class ModelTelemetry {
  constructor(
    @InjectMetric(METRIC.modelLoads) private readonly loads: Counter<'model' | 'result'>,
    @InjectMetric(METRIC.modelLoadDuration) private readonly loadDuration: Histogram<'model'>,
    @InjectMetric(METRIC.modelUnloads) private readonly unloads: Counter<'model' | 'reason'>,
  ) {}

  onModelEvent(event: ModelEventView): void {
    if (event.type === 'unloaded') {
      this.unloads.inc({ model: event.id, reason: event.reason });
      return;
    }
    this.loads.inc({ model: event.id, result: event.type === 'loaded' ? 'ok' : 'error' });
    if (event.type === 'loaded') this.loadDuration.observe({ model: event.id }, event.ms / 1000);
  }
}
