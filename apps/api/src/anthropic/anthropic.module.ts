import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { GenerationModule } from '../generation/generation.module';
import { ModelsModule } from '../models/models.module';
import { AnthropicController } from './anthropic.controller';
import { AnthropicService } from './anthropic.service';

@Module({ imports: [InferenceModule, GenerationModule, ModelsModule], controllers: [AnthropicController], providers: [AnthropicService] })
export class AnthropicModule {}
