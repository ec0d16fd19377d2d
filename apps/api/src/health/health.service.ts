import { BeforeApplicationShutdown, Injectable, Logger, ServiceUnavailableException } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { Server } from 'node:http';
import { HealthCheckResult, HealthCheckService, HealthIndicatorFunction } from '@nestjs/terminus';
import { AppConfig } from '@app/common';
import { InferenceService } from '@app/inference';
import { ObservabilityErrorCode, ObservabilityException } from '@app/observability';
import { DependencyHealthIndicator } from './dependency.health';
import { InferenceHealthIndicator } from './inference.health';

/**
 * Kubernetes probes. Startup: the model has loaded. Liveness: the process serves and its model did
 * not fail (a restart is the cure). Readiness: model loaded, scheduler admitting (not draining),
 * and every configured dependency answering. A failed probe is a 503 in the error envelope whose
 * `details` name each failed check.
 */
@Injectable()
export class HealthService implements BeforeApplicationShutdown {
  readonly #logger = new Logger('Health');

  constructor(
    private readonly checks: HealthCheckService,
    private readonly inferenceHealth: InferenceHealthIndicator,
    private readonly dependencies: DependencyHealthIndicator,
    private readonly inference: InferenceService,
    private readonly config: AppConfig,
    private readonly adapterHost: HttpAdapterHost,
  ) {}

  /** The seed's `/health`: always 200 while the process serves HTTP. */
  summary(): object {
    const state = this.inference.state;
    return {
      status: state === 'ready' ? 'healthy' : state === 'loading' ? 'loading' : 'unhealthy',
      model_loaded: state === 'ready',
      timestamp: new Date().toISOString(),
    };
  }

  live(): Promise<HealthCheckResult> {
    return this.#run(ObservabilityErrorCode.NotAlive, 'Not alive', [
      () => {
        const result = this.inferenceHealth.model();
        // Loading is alive; only a failed load is fatal.
        return this.inference.state === 'failed' ? result : { model: { ...result.model, status: 'up' as const } };
      },
    ]);
  }

  startup(): Promise<HealthCheckResult> {
    return this.#run(ObservabilityErrorCode.NotStarted, 'Not started', [() => this.inferenceHealth.model()]);
  }

  ready(): Promise<HealthCheckResult> {
    return this.#run(ObservabilityErrorCode.NotReady, 'Not ready', [
      () => this.inferenceHealth.model(),
      () => this.inferenceHealth.scheduler(),
      ...this.dependencies.configured.map((probe) => () => this.dependencies.check(probe)),
    ]);
  }

  /**
   * On shutdown, stop admitting (readiness turns 503 "draining" while the HTTP server still
   * answers) and let running generations finish, for at most DRAIN_TIMEOUT_MS. Past it, the
   * connections still open are closed: closing the HTTP server would otherwise wait for every
   * running stream however long it takes, and the orchestrator's SIGKILL would come first.
   */
  async beforeApplicationShutdown(signal?: string): Promise<void> {
    if (this.inference.state !== 'ready') return;
    if (signal) this.#logger.log(`${signal}: draining (at most ${this.config.drainTimeoutMs} ms)`);
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      this.inference.drain().then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.config.drainTimeoutMs))),
    ]).finally(() => clearTimeout(timer));
    if (drained) return;
    this.#logger.warn(`drain timeout (${this.config.drainTimeoutMs} ms): closing the connections of the requests still running`);
    const server = this.adapterHost.httpAdapter?.getHttpServer() as Server | undefined;
    server?.closeAllConnections?.();
  }

  async #run(code: ObservabilityErrorCode, title: string, indicators: HealthIndicatorFunction[]): Promise<HealthCheckResult> {
    try {
      return await this.checks.check(indicators);
    } catch (err) {
      if (!(err instanceof ServiceUnavailableException)) throw err;
      const result = err.getResponse() as HealthCheckResult;
      const details = Object.entries(result.error ?? {}).map(([field, info]) => {
        const { message, state } = info as { message?: unknown; state?: unknown };
        return { field, message: String(message ?? state ?? 'down') };
      });
      throw new ObservabilityException(code, `${title}: ${details.map((d) => `${d.field}: ${d.message}`).join('; ')}`, {
        details,
        headers: { 'Retry-After': '5' },
      });
    }
  }
}
