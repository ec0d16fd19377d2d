import { Module } from '@nestjs/common';
import { AppConfig } from '@app/common';
import { CachingModule, Embedder } from '@app/caching';
import { InferenceModule, InferenceService } from '@app/inference';
import { CacheAdminController } from './cache-admin.controller';

/**
 * The response caches, with the semantic cache's embedder taken from the inference layer
 * (EMBEDDING_MODEL_PATH, default the served model), and their admin routes.
 */
@Module({
  imports: [
    CachingModule.forRoot({
      imports: [InferenceModule],
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
