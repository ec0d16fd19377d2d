import { Module } from '@nestjs/common';
import { BatchingModule } from '@app/batching';
import { InferenceService } from './inference.service';
import { LlamaAdapter } from './llama.adapter';

@Module({
  imports: [BatchingModule],
  providers: [LlamaAdapter, InferenceService],
  exports: [InferenceService],
})
export class InferenceModule {}
