import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { UsageModule } from '../usage/usage.module';
import { RerankController } from './rerank.controller';
import { RerankService } from './rerank.service';

@Module({ imports: [InferenceModule, UsageModule], controllers: [RerankController], providers: [RerankService] })
export class RerankModule {}
