import { Module } from '@nestjs/common';
import { AuthModule } from '@app/auth';
import { CommonModule } from '@app/common';
import { ObservabilityModule } from '@app/observability';
import { UsageLedgerModule } from '@app/usage';
import { AdminModule } from './admin/admin.module';
import { AnthropicModule } from './anthropic/anthropic.module';
import { ResponseCacheModule } from './cache/cache.module';
import { GenerateModule } from './generate/generate.module';
import { HealthModule } from './health/health.module';
import { MetricsModule } from './metrics/metrics.module';
import { OpenAIModule } from './openai/openai.module';
import { RerankModule } from './rerank/rerank.module';
import { ResponsesModule } from './responses/responses.module';
import { RetrievalApiModule } from './retrieval/retrieval-api.module';
import { TokenizeModule } from './tokenize/tokenize.module';

@Module({
  imports: [
    CommonModule,
    ObservabilityModule,
    AuthModule.forServer(),
    UsageLedgerModule.forServer(),
    ResponseCacheModule,
    RetrievalApiModule,
    HealthModule,
    MetricsModule,
    GenerateModule,
    OpenAIModule,
    ResponsesModule,
    AnthropicModule,
    TokenizeModule,
    RerankModule,
    AdminModule,
  ],
})
export class AppModule {}
