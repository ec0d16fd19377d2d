import { Module } from '@nestjs/common';
import { BatchingModule } from '@app/batching';
import { ObservabilityModule, SchedulerTelemetry } from '@app/observability';
import { InferenceService, SCHEDULER_OBSERVER } from './inference.service';
import { LlamaAdapter } from './llama.adapter';
import { RerankerService } from './ranking/reranker.service';

@Module({
  imports: [BatchingModule, ObservabilityModule],
  providers: [LlamaAdapter, InferenceService, RerankerService, { provide: SCHEDULER_OBSERVER, useExisting: SchedulerTelemetry }],
  exports: [InferenceService, RerankerService],
})
export class InferenceModule {}
