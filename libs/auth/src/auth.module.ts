import { DynamicModule, Module, Provider } from '@nestjs/common';
import type { AuthConfig } from './auth.config';
import { APP_GUARD } from '@nestjs/core';
import { getOptionsToken, getStorageToken } from '@nestjs/throttler';
import { join } from 'node:path';
import { AppConfig } from '@app/common';
import { ApiKeyGuard } from './api-key.guard';
import { ApiKeysService } from './api-keys.service';
import { AuthStatsService } from './auth-stats.service';
import { GatewayGuard } from './gateway.guard';
import { KeyAuthService } from './key-auth.service';
import { KeyRepository } from './key.repository';
import { PostgresKeyRepository } from './postgres-key.repository';
import { RateLimitGuard, throttlerOptions } from './rate-limit.guard';
import { RateLimitService } from './rate-limit.service';
import { SqliteKeyRepository } from './sqlite-key.repository';

/** PostgreSQL when DATABASE_URL is set, else the SQLite file DATA_DIR/keys.db. */
export function createKeyRepository(config: AuthConfig): KeyRepository {
  return config.databaseUrl
    ? new PostgresKeyRepository({ connectionString: config.databaseUrl, schema: config.databaseSchema })
    : new SqliteKeyRepository(join(config.dataDir, 'keys.db'));
}

const STORE: Provider[] = [{ provide: KeyRepository, useFactory: createKeyRepository, inject: [AppConfig] }, ApiKeysService];

/**
 * API keys and rate limits. `forServer()`: the global GatewayGuard (keys, scopes, limits) with
 * everything behind it. `forKeyManagement()`: only the key store, for the CLI (no Redis, no guard).
 */
@Module({})
export class AuthModule {
  static forServer(): DynamicModule {
    return {
      module: AuthModule,
      global: true,
      providers: [
        ...STORE,
        AuthStatsService,
        KeyAuthService,
        RateLimitService,
        { provide: getStorageToken(), useExisting: RateLimitService },
        { provide: getOptionsToken(), useFactory: throttlerOptions, inject: [AppConfig, RateLimitService] },
        ApiKeyGuard,
        RateLimitGuard,
        GatewayGuard,
        { provide: APP_GUARD, useExisting: GatewayGuard },
      ],
      exports: [ApiKeysService, KeyAuthService, RateLimitService, AuthStatsService],
    };
  }

  static forKeyManagement(): DynamicModule {
    return { module: AuthModule, providers: STORE, exports: [ApiKeysService] };
  }
}
