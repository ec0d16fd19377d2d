import request from 'supertest';
import { DOCS_PATH, OPENAPI_JSON_PATH } from '../apps/api/src/openapi/openapi.setup';
import { EXPOSED_HEADERS } from '../apps/api/src/app.setup';
import { startTestApp, TestApp } from './support/test-app';

/** Every route the Express app serves, from its router (what Nest registered), as OpenAPI paths. */
function registeredRoutes(t: TestApp): { method: string; path: string }[] {
  const express = t.app.getHttpAdapter().getInstance() as { router: { stack: { route?: { path: string | string[]; methods: Record<string, boolean> } }[] } };
  const out: { method: string; path: string }[] = [];
  for (const layer of express.router.stack) {
    if (!layer.route) continue; // middleware (helmet, body parsers, /console static files)
    for (const path of Array.isArray(layer.route.path) ? layer.route.path : [layer.route.path]) {
      for (const [method, on] of Object.entries(layer.route.methods)) {
        if (on && method !== '_all') out.push({ method, path: path.replace(/:(\w+)/g, '{$1}') });
      }
    }
  }
  return out;
}

describe('OpenAPI document and docs page', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ CORS_ORIGINS: 'https://app.example.com' });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('/openapi.json is a valid OpenAPI document, public, with both key schemes and the error envelopes', async () => {
    const res = await request(t.url).get(OPENAPI_JSON_PATH).expect(200).expect('content-type', /json/);
    const { Validator } = await import('@seriousme/openapi-schema-validator');
    const result = await new Validator().validate(res.body);
    expect(result.errors).toBeUndefined();
    expect(result.valid).toBe(true);
    expect(res.body.components.securitySchemes).toEqual({
      bearer: expect.objectContaining({ type: 'http', scheme: 'bearer' }),
      'api-key': expect.objectContaining({ type: 'apiKey', in: 'header', name: 'X-API-Key' }),
    });
    expect(res.body.components.schemas.Error.properties.error.required).toEqual(['message', 'type', 'code']);
    const chat = res.body.paths['/v1/chat/completions'].post;
    expect(chat.security).toEqual([{ bearer: [] }, { 'api-key': [] }]);
    expect(chat.responses.default.content['application/json'].schema.$ref).toBe('#/components/schemas/Error');
    expect(chat.requestBody.content['application/json'].examples.basic.value).toMatchObject({ messages: [{ role: 'user' }] });
    expect(res.body.paths['/v1/messages'].post.responses.default.content['application/json'].schema.$ref).toBe('#/components/schemas/AnthropicError');
    expect(res.body.paths['/health'].get.security).toEqual([]);
  });

  it('documents every route the app registers (the docs page and its assets are not API routes)', async () => {
    const doc = (await request(t.url).get(OPENAPI_JSON_PATH).expect(200)).body as { paths: Record<string, Record<string, unknown>> };
    const routes = registeredRoutes(t).filter(
      (r) =>
        // The document itself, the page and its assets (Swagger's own Express routes).
        r.path !== OPENAPI_JSON_PATH &&
        r.path !== DOCS_PATH &&
        !r.path.startsWith(`${DOCS_PATH}/`) &&
        // Middleware bound to every path and method (the request-context middleware,
        // MiddlewareConsumer.forRoutes('{*path}')), not an endpoint.
        r.path !== '/{*path}',
    );
    expect(routes.length).toBeGreaterThan(40);
    const missing = routes.filter((r) => !doc.paths[r.path]?.[r.method]).map((r) => `${r.method.toUpperCase()} ${r.path}`);
    expect(missing).toEqual([]);
  });

  it('/docs is the Swagger UI page, its assets served locally', async () => {
    const page = await request(t.url).get(DOCS_PATH).expect(200).expect('content-type', /html/);
    expect(page.text).toContain('swagger-ui');
    expect(page.text).not.toMatch(/https?:\/\/(cdn|unpkg)/);
    await request(t.url).get(`${DOCS_PATH}/swagger-ui-bundle.js`).expect(200).expect('content-type', /javascript/);
    const init = await request(t.url).get(`${DOCS_PATH}/swagger-ui-init.js`).expect(200);
    expect(init.text).toContain('/v1/chat/completions');
  });

  it('CORS exposes every rate-limit (and other) header the server sends', async () => {
    const res = await request(t.url)
      .post('/v1/generate')
      .set({ authorization: `Bearer ${t.key}`, origin: 'https://app.example.com' })
      .send({ prompt: 'Hello', max_tokens: 2, temperature: 0 })
      .expect(200);
    const exposed = String(res.headers['access-control-expose-headers']).toLowerCase().split(/\s*,\s*/);
    const sent = Object.keys(res.headers).filter((h) => /^(x-ratelimit-|x-request-id|x-cache|retry-after|x-budget|x-replica|age$)/.test(h));
    expect(sent).toEqual(expect.arrayContaining(['x-ratelimit-limit-requests', 'x-ratelimit-remaining-requests', 'x-ratelimit-reset-requests', 'x-request-id']));
    expect(sent.filter((h) => !exposed.includes(h))).toEqual([]);
    for (const name of EXPOSED_HEADERS) expect(exposed).toContain(name.toLowerCase());
    for (const name of ['x-ratelimit-limit-tokens', 'x-ratelimit-remaining-tokens', 'x-ratelimit-reset-tokens', 'retry-after', 'x-budget-remaining-tokens']) expect(exposed).toContain(name);
  });
});

describe('DOCS_ENABLED=false', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ DOCS_ENABLED: 'false' });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('answers 404 for /openapi.json and /docs', async () => {
    await request(t.url).get(OPENAPI_JSON_PATH).expect(404);
    await request(t.url).get(DOCS_PATH).expect(404);
    await request(t.url).get(`${DOCS_PATH}/swagger-ui-bundle.js`).expect(404);
  });
});
