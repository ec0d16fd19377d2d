import { Logger, Module, OnApplicationShutdown, Inject } from '@nestjs/common';
import type { CachingConfig } from './caching.config';
import { createClient, createKeyv } from '@keyv/redis';
import { Keyv } from 'keyv';
import type { Redis } from 'ioredis';
import { AppConfig, LruMap } from '@app/common';
import { createCacheRedis, redisKeys, cacheRedisNamespace } from './cache.redis';

/** The stores behind the caches, built once from the configuration. */
export interface CacheStores {
  readonly kind: 'memory' | 'redis';
  /** The exact cache's Keyv store (handed to cache-manager). */
  readonly exact: Keyv;
  /** The in-memory LRU under `exact`, or null with Redis. */
  readonly lru: LruMap | null;
  /** ioredis client for the semantic cache and the admin operations, or null without Redis. */
  readonly redis: Redis | null;
}

export const CACHE_STORES = Symbol('CACHE_STORES');

function buildStores(config: CachingConfig): CacheStores {
  if (!config.redisUrl) {
    const lru = new LruMap(config.cacheMaxEntries);
    // No serialisation: entries are immutable records, kept by reference.
    const exact = new Keyv({ store: lru, serialize: undefined, deserialize: undefined, throwOnErrors: true });
    return { kind: 'memory', exact, lru, redis: null };
  }
  // node-redis (Keyv's client) must not queue commands while disconnected: a lookup would wait
  // for Redis to come back. Failing fast sends the request to the model; reconnection goes on.
  const client = createClient({
    url: config.redisUrl,
    disableOfflineQueue: true,
    socket: {
      connectTimeout: Math.max(1000, config.cacheTimeoutMs * 4),
      reconnectStrategy: (retries: number) => Math.min(100 * 2 ** Math.min(retries, 5), 2000),
    },
  });
  const exact = createKeyv(client, {
    namespace: redisKeys(cacheRedisNamespace(config)).exactNamespace,
    throwOnErrors: true,
    throwOnConnectError: true,
    connectionTimeout: Math.max(1000, config.cacheTimeoutMs * 4),
  });
  const redis = createCacheRedis(config.redisUrl, config.cacheTimeoutMs);
  return { kind: 'redis', exact, lru: null, redis };
}

/**
 * Owns the cache stores so that cache-manager (CacheModule) and the cache service share them;
 * closes the semantic/admin Redis client on shutdown (cache-manager disconnects its own).
 */
@Module({
  providers: [{ provide: CACHE_STORES, inject: [AppConfig], useFactory: buildStores }],
  exports: [CACHE_STORES],
})
export class CacheStoreModule implements OnApplicationShutdown {
  readonly #logger = new Logger('Cache');

  constructor(@Inject(CACHE_STORES) private readonly stores: CacheStores) {
    // Connection trouble is reported through the operations that fail; these listeners only
    // keep the clients from treating an 'error' event as fatal.
    stores.exact.on('error', () => undefined);
    stores.redis?.on('error', () => undefined);
    stores.redis?.connect().catch((err: Error) => this.#logger.warn(`Redis not reachable yet (${err.message}); retrying in the background`));
  }

  async onApplicationShutdown(): Promise<void> {
    this.stores.redis?.disconnect();
  }
}
