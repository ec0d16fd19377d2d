import { DynamicModule, FactoryProvider, Module, ModuleMetadata } from '@nestjs/common';
import type { CachingConfig } from './caching.config';
import { CacheModule } from '@nestjs/cache-manager';
import { AppConfig } from '@app/common';
import { CACHE_STORES, CacheStoreModule, CacheStores } from './cache-store.module';
import { CACHE_OBSERVER, CacheObserver, EMBEDDER, Embedder } from './caching.types';
import { ResponseCacheService } from './response-cache.service';

/** Options of {@link CachingModule.forRoot}. */
export interface CachingModuleOptions {
  /** Modules the embedder factory needs (e.g. the inference module). */
  readonly imports?: ModuleMetadata['imports'];
  /** Builds the semantic cache's embedder; without it the semantic cache stays off. */
  readonly embedder?: Omit<FactoryProvider<Embedder>, 'provide'>;
  /** Builds an observer of lookups and failures (metrics); optional. */
  readonly observer?: Omit<FactoryProvider<CacheObserver>, 'provide'>;
}

/**
 * The response caches: cache-manager 7 over an in-memory LRU, or over Redis (@keyv/redis) when
 * REDIS_URL is set, plus the semantic cache. Import once, in the application module: it is
 * global, so every generation module injects the same ResponseCacheService.
 */
@Module({})
export class CachingModule {
  static forRoot(options: CachingModuleOptions = {}): DynamicModule {
    return {
      module: CachingModule,
      global: true,
      imports: [
        ...(options.imports ?? []),
        CacheStoreModule,
        CacheModule.registerAsync({
          imports: [CacheStoreModule],
          inject: [CACHE_STORES, AppConfig],
          useFactory: (stores: CacheStores, config: CachingConfig) => ({ stores: [stores.exact], ttl: config.cacheTtlSeconds * 1000 }),
        }),
      ],
      providers: [
        ResponseCacheService,
        ...(options.embedder ? [{ provide: EMBEDDER, ...options.embedder }] : []),
        ...(options.observer ? [{ provide: CACHE_OBSERVER, ...options.observer }] : []),
      ],
      exports: [ResponseCacheService],
    };
  }
}
