import { Injectable } from '@nestjs/common';
import { HealthIndicatorResult, HealthIndicatorService } from '@nestjs/terminus';
import { DependencyProbe, DependencyProbes } from '@app/observability';

/**
 * Redis and PostgreSQL as Terminus checks (Terminus 11 ships neither a Redis nor a raw-pg
 * indicator). Only the dependencies configured with REDIS_URL / DATABASE_URL are checked.
 */
@Injectable()
export class DependencyHealthIndicator {
  constructor(
    private readonly probes: DependencyProbes,
    private readonly health: HealthIndicatorService,
  ) {}

  get configured(): readonly DependencyProbe[] {
    return this.probes.probes;
  }

  async check(probe: DependencyProbe): Promise<HealthIndicatorResult> {
    const indicator = this.health.check(probe.name);
    const result = await this.probes.check(probe);
    return result.up
      ? indicator.up({ latency_ms: result.latencyMs })
      : indicator.down({ message: result.error ?? 'unreachable', latency_ms: result.latencyMs });
  }
}
