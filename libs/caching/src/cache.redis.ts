import { Redis } from 'ioredis';

/**
 * The caches' namespace in Redis: REDIS_KEY_PREFIX (the prefix of every key this server writes,
 * default `llm:`) then CACHE_NAMESPACE (default `llm-cache`), e.g. `llm:llm-cache`.
 */
export function cacheRedisNamespace(config: { readonly redisKeyPrefix: string; readonly cacheNamespace: string }): string {
  return `${config.redisKeyPrefix}${config.cacheNamespace}`;
}

/**
 * Where the caches live in Redis, under cacheRedisNamespace (`<ns>`, default `llm:llm-cache`):
 * - `<ns>:exact::<sha256>`: one exact entry (string, PX = CACHE_TTL_SECONDS), written by Keyv;
 * - `<ns>:semantic:log`: the semantic entries (a stream every replica replays into its index);
 * - `<ns>:semantic:epoch`: bumped by a flush, so that every replica drops its index.
 */
export function redisKeys(namespace: string): { exactNamespace: string; exactPattern: string; semanticLog: string; semanticEpoch: string } {
  return {
    exactNamespace: `${namespace}:exact`,
    exactPattern: `${namespace}:exact::*`,
    semanticLog: `${namespace}:semantic:log`,
    semanticEpoch: `${namespace}:semantic:epoch`,
  };
}

/**
 * An ioredis client that fails fast instead of queueing while Redis is away (a request must never
 * wait on a dead cache) and keeps reconnecting in the background, so the caches come back on
 * their own. Callers must attach an 'error' listener.
 */
export function createCacheRedis(url: string, commandTimeoutMs: number): Redis {
  return new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: Math.max(1000, commandTimeoutMs * 4),
    commandTimeout: commandTimeoutMs,
    retryStrategy: (attempt: number) => Math.min(100 * 2 ** Math.min(attempt, 5), 2000),
    connectionName: 'llm-cache',
  });
}

/** Counts the keys matching `pattern` (SCAN, never KEYS: the server stays responsive). */
export async function countKeys(client: Redis, pattern: string): Promise<number> {
  let cursor = '0';
  let count = 0;
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    count += keys.length;
  } while (cursor !== '0');
  return count;
}

/** Deletes the keys matching `pattern` (SCAN + UNLINK); returns how many. */
export async function deleteKeys(client: Redis, pattern: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length) deleted += await client.unlink(...keys);
  } while (cursor !== '0');
  return deleted;
}
