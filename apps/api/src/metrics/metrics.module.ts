import { Module } from '@nestjs/common';
import { PrometheusModule } from '@willsoto/nestjs-prometheus';
import { InferenceModule } from '@app/inference';
import { AuthMetricsBridge } from './auth-metrics.bridge';
import { InferenceMetricsCollector } from './inference-metrics.collector';
import { MetricsController } from './metrics.controller';

/**
 * Serves `/metrics`. Process metrics are switched on by the ObservabilityModule (once per process),
 * so PrometheusModule only contributes the route here.
 */
@Module({
  imports: [PrometheusModule.register({ path: '/metrics', controller: MetricsController, defaultMetrics: { enabled: false } }), InferenceModule],
  providers: [InferenceMetricsCollector, AuthMetricsBridge],
})
export class MetricsModule {}
