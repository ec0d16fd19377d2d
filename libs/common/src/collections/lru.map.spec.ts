import { LruMap } from './lru.map';

describe('LruMap', () => {
  it('holds at most its capacity and forgets the least recently used key', () => {
    const lru = new LruMap<number>(2);
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
