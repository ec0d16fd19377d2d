import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { TokenizeController } from './tokenize.controller';

@Module({ imports: [InferenceModule], controllers: [TokenizeController] })
export class TokenizeModule {}
