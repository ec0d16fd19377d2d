import { DynamicModule, FactoryProvider, Module, ModuleMetadata } from '@nestjs/common';
import type { RetrievalConfig } from './retrieval.config';
import { AppConfig } from '@app/common';
import { LanceDbVectorStore } from './lancedb-vector.store';
import { RetrievalService } from './retrieval.service';
import { RETRIEVAL_EMBEDDER, RetrievalEmbedder, VECTOR_STORE, VectorStore } from './retrieval.types';

/** Options of {@link RetrievalModule.forRoot}. */
export interface RetrievalModuleOptions {
  /** Modules the factories need (e.g. the inference module). */
  readonly imports?: ModuleMetadata['imports'];
  /** Builds the embedder (vectors and the embedding model's tokenizer). Required. */
  readonly embedder: Omit<FactoryProvider<RetrievalEmbedder>, 'provide'>;
  /** Builds the vector store; default LanceDB at VECTOR_STORE_URI (DATA_DIR/vectors). */
  readonly store?: Omit<FactoryProvider<VectorStore>, 'provide'>;
}

/**
 * Document collections for retrieval-augmented generation. Import once, in the application
 * module: it is global, so every generation module injects the same RetrievalService.
 */
@Module({})
export class RetrievalModule {
  static forRoot(options: RetrievalModuleOptions): DynamicModule {
    return {
      module: RetrievalModule,
      global: true,
      imports: [...(options.imports ?? [])],
      providers: [
        RetrievalService,
        { provide: RETRIEVAL_EMBEDDER, ...options.embedder },
        options.store
          ? { provide: VECTOR_STORE, ...options.store }
          : { provide: VECTOR_STORE, inject: [AppConfig], useFactory: (config: RetrievalConfig) => new LanceDbVectorStore(config.vectorStoreUri) },
      ],
      exports: [RetrievalService],
    };
  }
}
