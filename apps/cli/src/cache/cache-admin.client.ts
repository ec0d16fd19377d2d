import { Injectable } from '@nestjs/common';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AppConfig } from '@app/common';
import { serverRequest, serverUrl, ServerTarget, ServerUnreachable } from '../server.request';
import { CacheLayer, CacheStats, createCacheRedis, countKeys, deleteKeys, redisKeys, cacheRedisNamespace } from '@app/caching';

export type { ServerTarget } from '../server.request';

/** What the CLI could read: the server's full stats, or only what Redis holds. */
export type StatsReport =
  | { source: 'server'; url: string; stats: CacheStats }
  | { source: 'redis'; reason: string; store: 'redis'; exact: { entries: number }; semantic: { entries: number } };

export type FlushReport = { source: 'server' | 'redis'; url?: string; reason?: string; flushed: { exact: number | null; semantic: number | null } };

/**
 * How the CLI reaches the caches. The in-memory caches live inside the server process, so the
 * CLI asks the server (`GET/DELETE /admin/cache` with an API key). When the server cannot be
 * reached and REDIS_URL is set, it works on Redis directly: what every replica shares (entry
 * counts; no hit/miss counters, which live in each server).
 */
@Injectable()
export class CacheAdminClient {
  constructor(private readonly config: AppConfig) {}

  async stats(target: ServerTarget): Promise<StatsReport> {
    const url = this.#url(target);
    const server = await this.#request(url, target, 'GET', '/admin/cache');
    if (server.ok) return { source: 'server', url, stats: server.body as CacheStats };
    return this.#withRedis(server.reason, async (redis) => {
      const keys = redisKeys(cacheRedisNamespace(this.config));
      const [exact, semantic] = await Promise.all([countKeys(redis, keys.exactPattern), redis.xlen(keys.semanticLog)]);
      return { source: 'redis', reason: server.reason, store: 'redis', exact: { entries: exact }, semantic: { entries: semantic } };
    });
  }

  async flush(target: ServerTarget, layers: CacheLayer[]): Promise<FlushReport> {
    const url = this.#url(target);
    const query = layers.length === 1 ? `?layer=${layers[0]}` : '';
    const server = await this.#request(url, target, 'DELETE', `/admin/cache${query}`);
    if (server.ok) return { source: 'server', url, flushed: (server.body as { flushed: FlushReport['flushed'] }).flushed };
    return this.#withRedis(server.reason, async (redis) => {
      const keys = redisKeys(cacheRedisNamespace(this.config));
      const flushed: FlushReport['flushed'] = { exact: null, semantic: null };
      if (layers.includes('exact')) flushed.exact = await deleteKeys(redis, keys.exactPattern);
      if (layers.includes('semantic')) {
        flushed.semantic = await redis.xlen(keys.semanticLog);
        // The epoch tells every replica to drop its in-process index.
        await redis.multi().incr(keys.semanticEpoch).del(keys.semanticLog).exec();
      }
      return { source: 'redis', reason: server.reason, flushed };
    });
  }

  #url(target: ServerTarget): string {
    return serverUrl(target, this.config);
  }

  /** ok with the body, or why the server could not answer at all (then Redis may be read directly). */
  async #request(
    url: string,
    target: ServerTarget,
    method: string,
    path: string,
  ): Promise<{ ok: true; body: unknown } | { ok: false; reason: string }> {
    try {
      // The server answered but refused: that error is thrown, since falling back to Redis would hide it.
      return { ok: true, body: await serverRequest({ ...target, url }, this.config, method, path, undefined, 5000) };
    } catch (err) {
      if (err instanceof ServerUnreachable) return { ok: false, reason: err.message };
      throw err;
    }
  }

  async #withRedis<T>(reason: string, work: (redis: ReturnType<typeof createCacheRedis>) => Promise<T>): Promise<T> {
    if (!this.config.redisUrl) {
      throw new Error(
        `${reason}, and REDIS_URL is not set. The in-memory caches live in the server process: start it, ` +
          'or pass --url (and --key) to reach it.',
      );
    }
    const redis = createCacheRedis(this.config.redisUrl, 5000);
    redis.on('error', () => undefined);
    try {
      await redis.connect();
      return await work(redis);
    } catch (err) {
      throw new Error(`${reason}, and Redis (REDIS_URL) failed: ${(err as Error).message}`);
    } finally {
      redis.disconnect();
    }
  }
}
