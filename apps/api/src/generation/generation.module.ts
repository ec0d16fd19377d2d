import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { UsageModule } from '../usage/usage.module';
import { GenerationPipeline } from './generation.pipeline';

/** The generation flow every wire format runs through (see GenerationPipeline). */
@Module({ imports: [InferenceModule, UsageModule], providers: [GenerationPipeline], exports: [GenerationPipeline] })
export class GenerationModule {}
