import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { ModelsModule } from '../models/models.module';
import { TokenizeController } from './tokenize.controller';

@Module({ imports: [InferenceModule, ModelsModule], controllers: [TokenizeController] })
export class TokenizeModule {}
