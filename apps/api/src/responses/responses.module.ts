import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { ResponseStoreModule } from '@app/response-store';
import { GenerationModule } from '../generation/generation.module';
import { ModelsModule } from '../models/models.module';
import { ResponsesController } from './responses.controller';
import { ResponsesService } from './responses.service';

@Module({ imports: [InferenceModule, GenerationModule, ModelsModule, ResponseStoreModule], controllers: [ResponsesController], providers: [ResponsesService] })
export class ResponsesModule {}
