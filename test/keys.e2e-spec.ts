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

/** Every route of the app as Express registered it: method and path template. */
function routesOf(t: TestApp): { method: string; path: string }[] {
  const express = t.app.getHttpAdapter().getInstance() as { router: { stack: { route?: { path: string; methods: Record<string, boolean> } }[] } };
  return express.router.stack
    .filter((layer) => layer.route && typeof layer.route.path === 'string' && !layer.route.path.includes('*'))
    .flatMap((layer) => Object.keys(layer.route!.methods).filter((m) => m !== '_all').map((method) => ({ method: method.toUpperCase(), path: layer.route!.path })));
}

/** Spellings of a path that Express may route to the same handler. */
function spellings(path: string): string[] {
  const mixed = path.replace(/[a-z]/g, (c, i: number) => (i % 2 ? c.toUpperCase() : c));
  const encoded = path.replace(/\/([a-z])/, (_, c: string) => `/%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return [...new Set([path, path.toUpperCase(), mixed, `${path}/`, `/${path}`, encoded, `${path}?x=1`, `${path.toUpperCase()}/`])];
}

describe('METRICS_PUBLIC=false and HEALTH_PUBLIC=false: no spelling of a protected route answers without a key (issue 17)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ METRICS_PUBLIC: 'false', HEALTH_PUBLIC: 'false' });
  });
  afterAll(() => t.close());

  it('case, trailing or doubled slash, percent-encoding and HEAD over every route: 401 or 404, never an answer', async () => {
    // The API description (/openapi.json, /docs and its assets) is public by design, like the
    // probes' default (DOCS_ENABLED=false removes it); it carries no data. Every other route is checked.
    const routes = routesOf(t).filter((r) => r.path !== '/openapi.json' && r.path !== '/docs' && !r.path.startsWith('/docs/'));
    expect((await fetch(`${t.url}/openapi.json`)).status).toBe(200);
    expect(routes.map((r) => `${r.method} ${r.path}`)).toEqual(expect.arrayContaining(['GET /metrics', 'GET /health/ready', 'DELETE /admin/cache', 'POST /v1/generate']));
    const answered: string[] = [];
    let tried = 0;
    for (const { method, path } of routes) {
      const concrete = path.replace(/:(\w+)/g, 'x1');
      const methods = method === 'GET' ? ['GET', 'HEAD'] : [method];
      for (const m of methods) {
        for (const spelled of spellings(concrete)) {
          tried++;
          const res = await fetch(`${t.url}${spelled}`, { method: m, ...(m === 'POST' ? { headers: { 'Content-Type': 'application/json' }, body: '{}' } : {}) });
          if (![401, 404].includes(res.status)) answered.push(`${m} ${spelled} → ${res.status}`);
          await res.arrayBuffer();
        }
      }
    }
    expect(answered).toEqual([]);
    expect(tried).toBeGreaterThan(150);
    // The canonical spellings are refused for want of a key (they are routed), and served with one.
    for (const path of ['/metrics', '/METRICS', '/mEtRiCs', '/Health/Ready', '/health/live/']) {
      expect([path, (await fetch(`${t.url}${path}`)).status]).toEqual([path, 401]);
    }
    const { key: admin } = await t.app.get(ApiKeysService).create({ name: 'scraper', scopes: ['admin'] });
    const { key: plain } = await t.app.get(ApiKeysService).create({ name: 'prober', scopes: ['generate'] });
    expect((await fetch(`${t.url}/METRICS`, { headers: { 'X-API-Key': admin } })).status).toBe(200);
    expect((await fetch(`${t.url}/Metrics/`, { headers: { 'X-API-Key': plain } })).status).toBe(403);
    expect((await fetch(`${t.url}/HEALTH/live`, { headers: { 'X-API-Key': plain } })).status).toBe(200);
  });
});

describe('AUTH_DISABLED=true opens generation only (issue 17)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ AUTH_DISABLED: 'true', API_KEYS: '', METRICS_PUBLIC: 'false' });
  });
  afterAll(() => t.close());

  it('generation and reads answer without a key; admin routes, retrieval writes and protected metrics still need one', async () => {
    expect((await post(t.url, '/v1/generate', undefined, HI)).status).toBe(200);
    expect((await fetch(`${t.url}/v1/collections`)).status).toBe(200);
    const closed: [string, string][] = [
      ['GET', '/admin/cache'],
      ['DELETE', '/admin/cache'],
      ['POST', '/v1/collections'],
      ['DELETE', '/v1/collections/kb'],
      ['POST', '/v1/collections/kb/documents'],
      ['DELETE', '/v1/collections/kb/documents/d1'],
      ['GET', '/metrics'],
    ];
    for (const [method, path] of closed) {
      const res = await fetch(`${t.url}${path}`, { method, ...(method === 'POST' ? { headers: { 'Content-Type': 'application/json' }, body: '{"name":"kb","text":"x"}' } : {}) });
      expect([method, path, res.status]).toEqual([method, path, 401]);
    }
    const { key } = await t.app.get(ApiKeysService).create({ name: 'operator', scopes: ['admin'] });
    expect((await fetch(`${t.url}/admin/cache`, { method: 'DELETE', headers: { 'X-API-Key': key } })).status).toBe(200);
    expect((await fetch(`${t.url}/metrics`, { headers: { 'X-API-Key': key } })).status).toBe(200);
  });
});

describe('AUTH_DISABLED=true with AUTH_DISABLED_SCOPES=generate,retrieval,admin (the explicit second switch)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ AUTH_DISABLED: 'true', AUTH_DISABLED_SCOPES: 'generate,retrieval,admin', API_KEYS: '' });
  });
  afterAll(() => t.close());

  it('opens the routes of the scopes it names', async () => {
    expect((await fetch(`${t.url}/admin/cache`, { method: 'DELETE' })).status).toBe(200);
  });
});
