import { Injectable } from '@nestjs/common';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AppConfig } from '@app/common';
import { CacheLayer, CacheStats, createCacheRedis, countKeys, deleteKeys, redisKeys, cacheRedisNamespace } from '@app/caching';

/** Where `cache` commands send their requests; flags win over the environment. */
export interface ServerTarget {
  /** Server base URL (default from HOST and PORT, e.g. http://127.0.0.1:8000). */
  url?: string;
  /** API key (default $API_KEY, else the first of API_KEYS). */
  key?: string;
}

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
    return (target.url ?? this.config.localUrl()).replace(/\/+$/, '');
  }

  #key(target: ServerTarget): string | undefined {
    if (target.key) return target.key;
    if (process.env.API_KEY?.trim()) return process.env.API_KEY.trim();
    return this.config.apiKeys[0];
  }

  /** ok with the body, or why the server could not answer (unreachable: `unreachable` true). */
  async #request(
    url: string,
    target: ServerTarget,
    method: string,
    path: string,
  ): Promise<{ ok: true; body: unknown } | { ok: false; reason: string }> {
    const key = this.#key(target);
    let res: Response;
    try {
      res = await fetch(`${url}${path}`, {
        method,
        headers: key ? { Authorization: `Bearer ${key}` } : {},
        signal: AbortSignal.timeout(5000),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      return { ok: false, reason: `server not reachable at ${url} (${cause})` };
    }
    const body = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
    if (res.ok) return { ok: true, body };
    // The server answered but refused: falling back to Redis would hide the real problem.
    throw new Error(`${method} ${url}${path} answered ${res.status}: ${body?.error?.message ?? res.statusText}`);
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
