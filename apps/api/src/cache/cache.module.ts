import { Module } from '@nestjs/common';
import { CacheObserver, CachingModule, Embedder } from '@app/caching';
import { MetricsService } from '@app/observability';
import { InferenceModule, InferenceService } from '@app/inference';
import { CacheAdminController } from './cache-admin.controller';

/**
 * The response caches, with the semantic cache's embedder taken from the inference layer
 * (the embedding model: EMBEDDING_MODEL_PATH or the models file's, default the default model),
 * their metrics, and their admin routes.
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
        inject: [InferenceService],
        useFactory: (inference: InferenceService): Embedder => ({
          embed: async (text) => (await inference.embed([text])).vectors[0],
          modelPath: () => inference.embeddingModelPath,
        }),
      },
    }),
  ],
  controllers: [CacheAdminController],
})
export class ResponseCacheModule {}
