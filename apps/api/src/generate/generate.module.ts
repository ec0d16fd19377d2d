import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { UsageModule } from '../usage/usage.module';
import { GenerateController } from './generate.controller';
import { GenerateService } from './generate.service';

@Module({ imports: [InferenceModule, UsageModule], controllers: [GenerateController], providers: [GenerateService] })
export class GenerateModule {}
