import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { GenerateController } from './generate.controller';
import { GenerateService } from './generate.service';

@Module({ imports: [InferenceModule], controllers: [GenerateController], providers: [GenerateService] })
export class GenerateModule {}
