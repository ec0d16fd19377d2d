import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { HealthController } from './health.controller';

@Module({ imports: [InferenceModule], controllers: [HealthController] })
export class HealthModule {}
