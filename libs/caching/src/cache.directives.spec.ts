import { CachingException } from './caching.exception';
import { parseCacheDirectives } from './cache.directives';
import { LruStore } from './lru.store';

describe('parseCacheDirectives', () => {
  it.each([
    [{}, { noCache: false, noStore: false, sampled: undefined }],
    [{ 'cache-control': 'no-cache' }, { noCache: true, noStore: false }],
    [{ 'cache-control': 'No-Store' }, { noCache: false, noStore: true }],
    [{ 'cache-control': 'max-age=0, no-cache , no-store' }, { noCache: true, noStore: true }],
    [{ 'cache-control': 'no-cache="x"' }, { noCache: true }],
    [{ 'cache-control': 'no-cacheable' }, { noCache: false }],
    [{ 'x-cache-sampled': 'true' }, { sampled: true }],
    [{ 'x-cache-sampled': 'FALSE' }, { sampled: false }],
  ])('%j', (headers, expected) => {
    expect(parseCacheDirectives(headers)).toMatchObject(expected);
  });

  it('rejects an X-Cache-Sampled that is not a boolean', () => {
    expect(() => parseCacheDirectives({ 'x-cache-sampled': 'maybe' })).toThrow(CachingException);
  });
});

describe('LruStore', () => {
  it('holds at most its capacity and forgets the least recently used key', () => {
    const lru = new LruStore<number>(2);
    lru.set('a', 1);
    lru.set('b', 2);
    expect(lru.get('a')).toBe(1); // a becomes the most recent
    lru.set('c', 3);
    expect([...lru.keys()]).toEqual(['a', 'c']);
    expect(lru.evictions).toBe(1);
    lru.set('a', 4); // an update is a use, not a new entry
    expect(lru.size).toBe(2);
    expect(lru.get('a')).toBe(4);
  });
});
