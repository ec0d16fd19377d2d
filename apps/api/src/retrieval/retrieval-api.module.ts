import { Module } from '@nestjs/common';
import { AppConfig } from '@app/common';
import { InferenceModule, InferenceService } from '@app/inference';
import { RetrievalEmbedder, RetrievalModule } from '@app/retrieval';
import { UsageModule } from '../usage/usage.module';
import { CollectionsController } from './collections.controller';
import { DocumentUploadsService } from './document-uploads.service';

/**
 * Retrieval with the embedder taken from the inference layer (EMBEDDING_MODEL_PATH, default the
 * served model): its vectors and its tokenizer, so chunks end on that model's token boundaries.
 */
@Module({
  imports: [
    UsageModule,
    InferenceModule,
    RetrievalModule.forRoot({
      imports: [InferenceModule],
      embedder: {
        inject: [InferenceService, AppConfig],
        useFactory: (inference: InferenceService, config: AppConfig): RetrievalEmbedder => ({
          embed: async (texts) => (await inference.embed(texts, { modelPath: config.embeddingModelPath })).vectors,
          tokenizer: () => inference.embeddingTokenizer({ modelPath: config.embeddingModelPath }),
        }),
      },
    }),
  ],
  controllers: [CollectionsController],
  providers: [DocumentUploadsService],
})
export class RetrievalApiModule {}
