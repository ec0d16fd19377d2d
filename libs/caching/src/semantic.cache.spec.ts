import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createCacheRedis, deleteKeys, redisKeys } from './cache.redis';
import type { CachedCompletion } from './caching.types';
import { SemanticCache } from './semantic.cache';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const record = (text: string): CachedCompletion => ({ v: 1, chunks: [text], finishReason: 'stop', completionTokens: 1, createdAt: 0 });
const vec = (...xs: number[]): Float32Array => Float32Array.from(xs);

describe('SemanticCache', () => {
  it('hits at or above the threshold and misses below, with exact similarities', async () => {
    const cache = new SemanticCache({ threshold: 0.95, maxEntries: 10, ttlMs: 60_000, redis: null, namespace: 'x' });
    await cache.store('a', 's', vec(1, 0, 0), record('A'));
    // cos = 0.96 and 0.94: vectors built so.
    const above = await cache.lookup('s', vec(0.96, Math.sqrt(1 - 0.96 ** 2), 0));
    expect(above).toMatchObject({ hit: true, match: { id: 'a' } });
    expect(above?.match.similarity).toBeCloseTo(0.96, 6);
    const below = await cache.lookup('s', vec(0.94, Math.sqrt(1 - 0.94 ** 2), 0));
    expect(below?.hit).toBe(false);
    expect(below?.match.similarity).toBeCloseTo(0.94, 6);
    expect(await cache.lookup('other-scope', vec(1, 0, 0))).toBeNull();
  });

  it('keeps maxEntries, evicting the least recently used', async () => {
    const cache = new SemanticCache({ threshold: 0.99, maxEntries: 2, ttlMs: 60_000, redis: null, namespace: 'x' });
    await cache.store('a', 's', vec(1, 0, 0), record('A'));
    await cache.store('b', 's', vec(0, 1, 0), record('B'));
    expect((await cache.lookup('s', vec(1, 0, 0)))?.hit).toBe(true); // a used: b is the coldest
    await cache.store('c', 's', vec(0, 0, 1), record('C'));
    expect(cache.size).toBe(2);
    expect(cache.evictions).toBe(1);
    expect((await cache.lookup('s', vec(0, 1, 0)))?.hit).toBe(false);
    expect((await cache.lookup('s', vec(1, 0, 0)))?.hit).toBe(true);
  });

  describe('through Redis', () => {
    const namespace = `test-semantic-${randomBytes(6).toString('hex')}`;
    const clients: Redis[] = [];
    const replica = (): SemanticCache => {
      const redis = createCacheRedis(REDIS_URL, 1000);
      redis.on('error', () => undefined);
      clients.push(redis);
      return new SemanticCache({ threshold: 0.95, maxEntries: 100, ttlMs: 60_000, redis, namespace });
    };
    afterAll(async () => {
      await clients[0]?.connect().catch(() => undefined);
      if (clients[0]) await deleteKeys(clients[0], `${namespace}:*`);
      clients.forEach((c) => c.disconnect());
    });

    it('shares entries between replicas and a flush empties every replica', async () => {
      const [one, two] = [replica(), replica()];
      await Promise.all(clients.map((c) => c.connect()));
      await one.store('a', 's', vec(1, 0, 0), record('from one'));
      const seen = await two.lookup('s', vec(1, 0.05, 0));
      expect(seen).toMatchObject({ hit: true, match: { id: 'a', value: { chunks: ['from one'] } } });
      expect(await clients[0].xlen(redisKeys(namespace).semanticLog)).toBe(1);

      // A third replica started later loads the log.
      const three = replica();
      await clients[2].connect();
      expect((await three.lookup('s', vec(1, 0, 0)))?.hit).toBe(true);

      await two.flush();
      expect((await one.lookup('s', vec(1, 0, 0))) ?? null).toBeNull();
      expect(one.size).toBe(0);
      await one.store('b', 's', vec(0, 1, 0), record('after flush'));
      expect((await three.lookup('s', vec(0, 1, 0)))?.match.id).toBe('b');
      expect(three.size).toBe(1);
    });
  });
});
