import { ApiKeysService, AuthStatsService, generateKey, generateKeyId, hashKey, KeyRepository, keyHint } from '@app/auth';
import { post } from './support/http';
import { startTestApp, TestApp } from './support/test-app';

const HI = { prompt: 'Hi', max_tokens: 2 };

describe('API keys over HTTP', () => {
  let t: TestApp;
  let keys: ApiKeysService;
  beforeAll(async () => {
    t = await startTestApp({ KEY_CACHE_TTL_MS: '0' });
    keys = t.app.get(ApiKeysService);
  });
  afterAll(() => t.close());

  it('accepts a stored key as X-API-Key and as Bearer; refuses a missing or unknown one with 401', async () => {
    const { key } = await keys.create({ name: 'http' });
    expect((await post(t.url, '/v1/generate', key, HI)).status).toBe(200);
    const bearer = await fetch(`${t.url}/v1/models`, { headers: { Authorization: `Bearer ${key}` } });
    expect(bearer.status).toBe(200);
    const missing = await post(t.url, '/v1/generate', undefined, HI);
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toBe('Bearer');
    expect(missing.body.error).toMatchObject({ type: 'authentication_error', code: 'missing_api_key' });
    const unknown = await post(t.url, '/v1/generate', generateKey(), HI);
    expect(unknown.body.error).toMatchObject({ type: 'authentication_error', code: 'invalid_api_key', message: 'Invalid API key' });
  });

  it('a key without the generate scope gets 403 on generation routes', async () => {
    const { key } = await keys.create({ name: 'admin-only', scopes: ['admin'] });
    const r = await post(t.url, '/v1/chat/completions', key, { messages: [{ role: 'user', content: 'Hi' }] });
    expect(r.status).toBe(403);
    expect(r.body.error).toEqual({
      message: 'This API key lacks the scope(s) generate needed here',
      type: 'permission_error',
      code: 'insufficient_scope',
    });
  });

  it('an expired key gets 401 api_key_expired', async () => {
    const key = generateKey();
    await t.app.get(KeyRepository).insert({
      id: generateKeyId(),
      name: 'expired',
      hash: hashKey(key),
      hint: keyHint(key),
      scopes: ['generate'],
      limits: { rpm: 0, tpm: 0, concurrency: 0 },
      priority: 'normal',
      createdAt: new Date(Date.now() - 60_000),
      expiresAt: new Date(Date.now() - 1000),
    });
    const r = await post(t.url, '/v1/generate', key, HI);
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe('api_key_expired');
  });

  it('rotation: the old secret stops working, the new one works, the id stays', async () => {
    const first = await keys.create({ name: 'rotating' });
    const rotated = await keys.rotate('rotating');
    expect(rotated.record.id).toBe(first.record.id);
    expect((await post(t.url, '/v1/generate', first.key, HI)).body.error.code).toBe('invalid_api_key');
    expect((await post(t.url, '/v1/generate', rotated.key, HI)).status).toBe(200);
    await keys.revoke(first.record.id);
    expect((await post(t.url, '/v1/generate', rotated.key, HI)).body.error.code).toBe('api_key_revoked');
  });

  it('counts refusals by code for metrics', () => {
    const { rejections } = t.app.get(AuthStatsService).stats();
    expect(rejections.missing_api_key).toBeGreaterThanOrEqual(1);
    expect(rejections.invalid_api_key).toBeGreaterThanOrEqual(1);
    expect(rejections.insufficient_scope).toBeGreaterThanOrEqual(1);
  });

  it('health is open by default', async () => {
    expect((await fetch(`${t.url}/health`)).status).toBe(200);
  });
});

describe('HEALTH_PUBLIC=false', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ HEALTH_PUBLIC: 'false' });
  });
  afterAll(() => t.close());

  it('health needs a valid key (any scope)', async () => {
    expect((await fetch(`${t.url}/health`)).status).toBe(401);
    const { key } = await t.app.get(ApiKeysService).create({ name: 'probe', scopes: ['admin'] });
    expect((await fetch(`${t.url}/health`, { headers: { 'X-API-Key': key } })).status).toBe(200);
  });
});

describe('AUTH_DISABLED=true', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ AUTH_DISABLED: 'true', API_KEYS: '', RATE_LIMIT_IP_RPM: '2' });
  });
  afterAll(() => t.close());

  it('serves without a key, still limited per IP', async () => {
    expect((await post(t.url, '/v1/generate', undefined, HI)).status).toBe(200);
    expect((await post(t.url, '/v1/generate', undefined, HI)).status).toBe(200);
    expect((await post(t.url, '/v1/generate', undefined, HI)).status).toBe(429);
  });
});
