import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { OpenAIController } from './openai.controller';
import { OpenAIService } from './openai.service';

@Module({ imports: [InferenceModule], controllers: [OpenAIController], providers: [OpenAIService] })
export class OpenAIModule {}
