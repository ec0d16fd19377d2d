import { redactUrl } from './url.redaction';

describe('redactUrl', () => {
  it('masks credential-like query parameters and keeps the rest', () => {
    expect(redactUrl('/v1/generate')).toBe('/v1/generate');
    expect(redactUrl('/v1/generate?api_key=sk-abc&x=1')).toBe('/v1/generate?api_key=[redacted]&x=1');
    expect(redactUrl('/admin/cache?layer=exact&API-KEY=sk-1&token=t&%6Bey=sk-2')).toBe('/admin/cache?layer=exact&API-KEY=[redacted]&token=[redacted]&%6Bey=[redacted]');
    expect(redactUrl('/x?%E0%A4%A=1&key')).toBe('/x?%E0%A4%A=1&key');
  });
});
