import { CachingException } from './caching.exception';
import { parseCacheDirectives } from './cache.directives';

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
