import { Module } from '@nestjs/common';
import type { ResponseStoreConfig } from './response-store.config';
import { join } from 'node:path';
import { AppConfig } from '@app/common';
import { PostgresResponseRepository } from './postgres-response.repository';
import { ResponseRepository } from './response.repository';
import { ResponseStoreService } from './response-store.service';
import { SqliteResponseRepository } from './sqlite-response.repository';

/** The key store's database: PostgreSQL with DATABASE_URL (same schema), else DATA_DIR/keys.db. */
export function createResponseRepository(config: ResponseStoreConfig): ResponseRepository {
  return config.databaseUrl
    ? new PostgresResponseRepository({ connectionString: config.databaseUrl, schema: config.databaseSchema })
    : new SqliteResponseRepository(join(config.dataDir, 'keys.db'));
}

/** Stored Responses API responses (`store`, `previous_response_id`, `GET/DELETE /v1/responses/{id}`). */
@Module({
  providers: [{ provide: ResponseRepository, useFactory: createResponseRepository, inject: [AppConfig] }, ResponseStoreService],
  exports: [ResponseStoreService],
})
export class ResponseStoreModule {}
