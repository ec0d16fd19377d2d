import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { GenerationModule } from '../generation/generation.module';
import { ModelsModule } from '../models/models.module';
import { UsageModule } from '../usage/usage.module';
import { OpenAIController } from './openai.controller';
import { OpenAIService } from './openai.service';

@Module({ imports: [InferenceModule, ModelsModule, GenerationModule, UsageModule], controllers: [OpenAIController], providers: [OpenAIService] })
export class OpenAIModule {}
