import { Module } from '@nestjs/common';
import { AppConfig } from '@app/common';
import { CacheObserver, CachingModule, Embedder } from '@app/caching';
import { MetricsService } from '@app/observability';
import { InferenceModule, InferenceService } from '@app/inference';
import { CacheAdminController } from './cache-admin.controller';

/**
 * The response caches, with the semantic cache's embedder taken from the inference layer
 * (EMBEDDING_MODEL_PATH, default the served model), their metrics, and their admin routes.
 */
@Module({
  imports: [
    CachingModule.forRoot({
      imports: [InferenceModule],
      // Lookups become llm_cache_lookups_total{cache,result} and the request log's `cache` field.
      observer: {
        inject: [MetricsService],
        useFactory: (metrics: MetricsService): CacheObserver => ({
          onLookup: (layer, outcome) => metrics.cacheLookup(layer, outcome),
          onError: (layer) => metrics.cacheLookup(layer, 'error'),
        }),
      },
      embedder: {
        inject: [InferenceService, AppConfig],
        useFactory: (inference: InferenceService, config: AppConfig): Embedder => ({
          embed: async (text) => (await inference.embed([text], { modelPath: config.embeddingModelPath })).vectors[0],
        }),
      },
    }),
  ],
  controllers: [CacheAdminController],
})
export class ResponseCacheModule {}
