import { Module } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import { InferenceModule } from '@app/inference';
import { DependencyHealthIndicator } from './dependency.health';
import { HealthController } from './health.controller';
import { HealthService } from './health.service';
import { InferenceHealthIndicator } from './inference.health';

@Module({
  // Failed checks are answered (503 with details) and dependency changes logged once; Terminus's
  // own error log would repeat them on every probe.
  imports: [TerminusModule.forRoot({ logger: false }), InferenceModule],
  controllers: [HealthController],
  providers: [HealthService, InferenceHealthIndicator, DependencyHealthIndicator],
})
export class HealthModule {}
