export * from './response-store.module';
export * from './response-store.service';
export * from './response-store.types';
export * from './response.repository';
export * from './sqlite-response.repository';
export * from './postgres-response.repository';
