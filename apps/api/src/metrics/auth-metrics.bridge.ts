import { Injectable, OnModuleDestroy, OnModuleInit } from '@nestjs/common';
import { AuthStatsService, LimitKind } from '@app/auth';
import { MetricsService } from '@app/observability';

const KIND: Record<LimitKind, 'requests' | 'tokens' | 'concurrency'> = {
  ip_requests: 'requests',
  key_requests: 'requests',
  key_tokens: 'tokens',
  key_concurrency: 'concurrency',
};

/** Rate-limit refusals from the auth library become llm_rate_limited_total{kind}. */
@Injectable()
export class AuthMetricsBridge implements OnModuleInit, OnModuleDestroy {
  readonly #onRejected = (_code: unknown, limit: LimitKind | undefined): void => {
    if (limit) this.metrics.rateLimited(KIND[limit]);
  };

  constructor(
    private readonly stats: AuthStatsService,
    private readonly metrics: MetricsService,
  ) {}

  onModuleInit(): void {
    this.stats.on('rejected', this.#onRejected);
  }

  onModuleDestroy(): void {
    this.stats.off('rejected', this.#onRejected);
  }
}
