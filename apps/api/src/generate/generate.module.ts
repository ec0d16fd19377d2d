import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { GenerationModule } from '../generation/generation.module';
import { ModelsModule } from '../models/models.module';
import { GenerateController } from './generate.controller';
import { GenerateService } from './generate.service';

@Module({ imports: [InferenceModule, ModelsModule, GenerationModule], controllers: [GenerateController], providers: [GenerateService] })
export class GenerateModule {}
