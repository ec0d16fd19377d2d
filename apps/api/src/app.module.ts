import { Module } from '@nestjs/common';
import { AuthModule } from '@app/auth';
import { CommonModule } from '@app/common';
import { ObservabilityModule } from '@app/observability';
import { UsageLedgerModule } from '@app/usage';
import { AdminModule } from './admin/admin.module';
import { ResponseCacheModule } from './cache/cache.module';
import { GenerateModule } from './generate/generate.module';
import { HealthModule } from './health/health.module';
import { MetricsModule } from './metrics/metrics.module';
import { OpenAIModule } from './openai/openai.module';
import { RetrievalApiModule } from './retrieval/retrieval-api.module';

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
    AdminModule,
  ],
})
export class AppModule {}
