export * from './retrieval.module';
export * from './retrieval.types';
export * from './retrieval.exception';
export * from './retrieval.service';
export * from './chunker';
export * from './lancedb-vector.store';
