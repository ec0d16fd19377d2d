import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { ResponseStoreModule } from '@app/response-store';
import { GenerationModule } from '../generation/generation.module';
import { ResponsesController } from './responses.controller';
import { ResponsesService } from './responses.service';

@Module({ imports: [InferenceModule, GenerationModule, ResponseStoreModule], controllers: [ResponsesController], providers: [ResponsesService] })
export class ResponsesModule {}
