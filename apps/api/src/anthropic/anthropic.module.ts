import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { GenerationModule } from '../generation/generation.module';
import { AnthropicController } from './anthropic.controller';
import { AnthropicService } from './anthropic.service';

@Module({ imports: [InferenceModule, GenerationModule], controllers: [AnthropicController], providers: [AnthropicService] })
export class AnthropicModule {}
