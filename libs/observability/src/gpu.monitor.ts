import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown, Inject } from '@nestjs/common';
import type { ObservabilityConfig } from './observability.config';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import type { Gauge } from 'prom-client';
import { AppConfig } from '@app/common';
import { METRIC } from './metrics.providers';
import { GpuReading, sampleNvidiaSmi } from './nvidia-smi.sampler';

/**
 * Samples NVIDIA GPUs with nvidia-smi in the background (GPU_METRICS_INTERVAL_MS). On a machine
 * without nvidia-smi it sets `gpu_available 0` once, logs one line and stops asking; a GPU whose
 * query fails is reported as unavailable and logged once per change, never once per sample.
 */
@Injectable()
export class GpuMonitor implements OnApplicationBootstrap, OnApplicationShutdown {
  readonly #logger = new Logger('GpuMetrics');
  #timer: NodeJS.Timeout | undefined;
  #lastProblem: string | null = null;
  #knownIds = new Set<string>();
  /** The nvidia-smi executable; tests point it at a script. */
  command = 'nvidia-smi';

  constructor(
    @Inject(AppConfig) private readonly config: ObservabilityConfig,
    @InjectMetric(METRIC.gpuAvailable) private readonly available: Gauge,
    @InjectMetric(METRIC.gpuUtilization) private readonly utilization: Gauge<'gpu_id'>,
    @InjectMetric(METRIC.gpuMemoryUsed) private readonly memoryUsed: Gauge<'gpu_id'>,
    @InjectMetric(METRIC.gpuMemoryTotal) private readonly memoryTotal: Gauge<'gpu_id'>,
  ) {}

  onApplicationBootstrap(): void {
    this.available.set(0);
    if (this.config.gpuMetricsIntervalMs === 0) return;
    void this.sample().then((reading) => {
      if (!reading.ok && reading.reason === 'missing') return; // nothing will change while we run
      this.#timer = setInterval(() => void this.sample(), this.config.gpuMetricsIntervalMs);
      this.#timer.unref();
    });
  }

  onApplicationShutdown(): void {
    clearInterval(this.#timer);
  }

  /** Takes one sample and updates the gauges. */
  async sample(): Promise<GpuReading> {
    const reading = await sampleNvidiaSmi(this.command);
    if (!reading.ok || reading.gpus.length === 0) {
      this.available.set(0);
      this.#clear();
      const problem = reading.ok ? 'nvidia-smi lists no GPU' : reading.message;
      if (problem !== this.#lastProblem) {
        this.#lastProblem = problem;
        if (!reading.ok && reading.reason === 'missing') this.#logger.log('No NVIDIA GPU (nvidia-smi not found): gpu_available 0');
        else this.#logger.warn(`GPU metrics unavailable: ${problem}; gpu_available 0`);
      }
      return reading;
    }
    if (this.#lastProblem !== null) this.#logger.log(`GPU metrics available again: ${reading.gpus.length} GPU(s)`);
    this.#lastProblem = null;
    this.available.set(reading.gpus.length);
    const seen = new Set<string>();
    for (const gpu of reading.gpus) {
      seen.add(gpu.index);
      const labels = { gpu_id: gpu.index };
      if (gpu.utilizationPercent !== null) this.utilization.set(labels, gpu.utilizationPercent);
      if (gpu.memoryUsedBytes !== null) this.memoryUsed.set(labels, gpu.memoryUsedBytes);
      if (gpu.memoryTotalBytes !== null) this.memoryTotal.set(labels, gpu.memoryTotalBytes);
    }
    for (const id of this.#knownIds) if (!seen.has(id)) this.#remove(id);
    this.#knownIds = seen;
    return reading;
  }

  #clear(): void {
    for (const id of this.#knownIds) this.#remove(id);
    this.#knownIds.clear();
  }

  #remove(id: string): void {
    for (const gauge of [this.utilization, this.memoryUsed, this.memoryTotal]) gauge.remove({ gpu_id: id });
  }
}
