import { looksSecret, redactSecrets, redactUrl, registerSecrets } from './url.redaction';

describe('redactUrl', () => {
  it('masks credential-like query parameters and keeps the rest', () => {
    expect(redactUrl('/v1/generate')).toBe('/v1/generate');
    expect(redactUrl('/v1/generate?api_key=sk-abc&x=1')).toBe('/v1/generate?api_key=[redacted]&x=1');
    expect(redactUrl('/admin/cache?layer=exact&API-KEY=sk-1&token=t&%6Bey=sk-2')).toBe('/admin/cache?layer=exact&API-KEY=[redacted]&token=[redacted]&%6Bey=[redacted]');
    expect(redactUrl('/x?%E0%A4%A=1&key')).toBe('/x?%E0%A4%A=1&key');
  });
});

describe('redaction by name and by value (issue 17)', () => {
  const KEY = 'sk-llm-AbCdEfGhIjKlMnOpQrStUvWxYz012345';

  it('masks the parameter names the outside probe used', () => {
    for (const name of ['x-api-key', 'bearer', 'sk', 'api_key[]', 'api_key[0]', 'auth[token]', 'access.token', 'X-Auth-Token', 'apikey', 'client_secret']) {
      expect([name, redactUrl(`/v1/models?${name}=abc123`)]).toEqual([name, `/v1/models?${name}=[redacted]`]);
    }
    expect(redactUrl('/v1/models?monkey=1&keyboard=2&layer=exact')).toBe('/v1/models?monkey=1&keyboard=2&layer=exact');
  });

  it('masks a key by its shape wherever it is: path, an unknown parameter, a fragment of text', () => {
    expect(redactUrl(`/v1/${KEY}/generate`)).toBe('/v1/[redacted]/generate');
    expect(redactUrl(`/v1/models?q=${KEY}`)).toBe('/v1/models?q=[redacted]');
    expect(redactSecrets(`{"id":"${KEY}","msg":"Authorization: Bearer abc.def-123456 and Basic dXNlcjpwYXNz"}`)).toBe(
      '{"id":"[redacted]","msg":"Authorization: Bearer [redacted] and Basic [redacted]"}',
    );
    expect(redactSecrets('sk-learn and a risk-free task')).toBe('sk-learn and a risk-free task');
    expect(looksSecret(KEY)).toBe(true);
    expect(looksSecret('0f8c2a4e-1b7d-4c2e-9a55-6c1e2d3f4a5b')).toBe(false);
  });

  it('masks registered static keys whatever their shape', () => {
    registerSecrets(['my-static-key-42']);
    expect(redactSecrets('/v1/my-static-key-42/x')).toBe('/v1/[redacted]/x');
    expect(looksSecret('my-static-key-42')).toBe(true);
  });
});
