import { Module } from '@nestjs/common';
import { BatchingModule } from '@app/batching';
import { ModelTelemetry, ObservabilityModule, SchedulerTelemetry } from '@app/observability';
import { InferenceService, MODEL_EVENTS_OBSERVER, SCHEDULER_OBSERVER } from './inference.service';
import { RerankerService } from './ranking/reranker.service';

@Module({
  imports: [BatchingModule, ObservabilityModule],
  providers: [
    InferenceService,
    RerankerService,
    { provide: SCHEDULER_OBSERVER, useExisting: SchedulerTelemetry },
    { provide: MODEL_EVENTS_OBSERVER, useExisting: ModelTelemetry },
  ],
  exports: [InferenceService, RerankerService],
})
export class InferenceModule {}
