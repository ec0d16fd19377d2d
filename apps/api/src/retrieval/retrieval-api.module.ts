import { Module } from '@nestjs/common';
import { InferenceModule, InferenceService } from '@app/inference';
import { RetrievalEmbedder, RetrievalModule } from '@app/retrieval';
import { UsageModule } from '../usage/usage.module';
import { CollectionsController } from './collections.controller';
import { DocumentUploadsService } from './document-uploads.service';

/**
 * Retrieval with the embedder taken from the inference layer (the embedding model: EMBEDDING_MODEL_PATH
 * or the models file's, default the default model): its vectors and its tokenizer, so chunks end on that model's token boundaries.
 */
@Module({
  imports: [
    UsageModule,
    InferenceModule,
    RetrievalModule.forRoot({
      imports: [InferenceModule],
      embedder: {
        inject: [InferenceService],
        useFactory: (inference: InferenceService): RetrievalEmbedder => ({
          embed: async (texts) => (await inference.embed(texts)).vectors,
          tokenizer: () => inference.embeddingTokenizer(),
        }),
      },
    }),
  ],
  controllers: [CollectionsController],
  providers: [DocumentUploadsService],
})
export class RetrievalApiModule {}
