import { ApiKeysService } from '@app/auth';
import { UsageLedgerService } from '@app/usage';
import { runCli } from './support/cli';
import { post } from './support/http';
import { metric, scrape } from './support/metrics';
import { parseSse, startTestApp, TestApp } from './support/test-app';

type Usage = { prompt_tokens: number; completion_tokens: number; prompt_tokens_details?: { cached_tokens: number } };
interface Expected {
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  errors: number;
}

const get = async (t: TestApp, path: string, key: string): Promise<{ status: number; headers: Headers; body: any }> => {
  const res = await fetch(`${t.url}${path}`, { headers: { Authorization: `Bearer ${key}` } });
  return { status: res.status, headers: res.headers, body: await res.json() };
};

describe('usage ledger over HTTP and the CLI (SQLite)', () => {
  let t: TestApp;
  beforeAll(async () => {
    // Sampled requests with the cache off: every request runs the model. Flushes only when asked
    // (the report routes flush this replica first), so nothing depends on timing.
    t = await startTestApp({ CACHE_ENABLED: 'false', USAGE_FLUSH_INTERVAL_MS: '3600000' });
  });
  afterAll(() => t.close());

  it('N requests across two keys and two routes sum exactly, in /admin/usage, /v1/usage and `usage --json`', async () => {
    const keys = t.app.get(ApiKeysService);
    const a = await keys.create({ name: 'usage-a' });
    const b = await keys.create({ name: 'usage-b' });
    const expected: Record<string, Record<string, Expected>> = {};
    const add = (key: string, route: string, usage: Usage | null): void => {
      const e = ((expected[key] ??= {})[route] ??= { requests: 0, prompt_tokens: 0, completion_tokens: 0, errors: 0 });
      e.requests++;
      if (usage) {
        e.prompt_tokens += usage.prompt_tokens;
        e.completion_tokens += usage.completion_tokens;
      } else e.errors++;
    };
    const generate = async (key: { key: string; record: { id: string } }, maxTokens: number): Promise<void> => {
      const r = await post(t.url, '/v1/generate', key.key, { prompt: 'Once upon a time', max_tokens: maxTokens, temperature: 0.9 });
      expect(r.status).toBe(200);
      add(key.record.id, '/v1/generate', r.body.usage);
    };
    const chat = async (key: { key: string; record: { id: string } }, maxTokens: number, stream: boolean): Promise<void> => {
      const body = { messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: maxTokens, temperature: 0.9, stream, stream_options: stream ? { include_usage: true } : undefined };
      const r = await post(t.url, '/v1/chat/completions', key.key, body);
      expect(r.status).toBe(200);
      const usage = stream ? JSON.parse(parseSse(r.body as string).filter((d) => d.includes('"usage":{')).at(-1) as string).usage : r.body.usage;
      add(key.record.id, '/v1/chat/completions', usage);
    };
    await Promise.all([generate(a, 5), generate(a, 7), generate(a, 3), chat(a, 6, false), chat(a, 4, true)]);
    await Promise.all([generate(b, 8), chat(b, 5, true), chat(b, 9, false), chat(b, 2, false)]);
    // A request refused by validation is a request of that key and route, with an error and no tokens.
    const bad = await post(t.url, '/v1/generate', a.key, { prompt: 'Hi', max_tokens: 0 });
    expect(bad.status).toBe(400);
    add(a.record.id, '/v1/generate', null);

    const report = await get(t, '/admin/usage?group_by=key,route', t.key);
    expect(report.status).toBe(200);
    const rows = report.body.data as Record<string, unknown>[];
    for (const [keyId, routes] of Object.entries(expected)) {
      for (const [route, e] of Object.entries(routes)) {
        expect(rows).toContainEqual({
          key_id: keyId,
          key_name: keyId === a.record.id ? 'usage-a' : 'usage-b',
          route,
          requests: e.requests,
          prompt_tokens: e.prompt_tokens,
          cached_prompt_tokens: expect.any(Number),
          completion_tokens: e.completion_tokens,
          total_tokens: e.prompt_tokens + e.completion_tokens,
          cache_hits: 0,
          errors: e.errors,
        });
      }
    }
    const all = Object.values(expected).flatMap((r) => Object.values(r));
    const total = (k: keyof Expected): number => all.reduce((s, e) => s + e[k], 0);
    expect(report.body.totals).toMatchObject({ requests: 10, prompt_tokens: total('prompt_tokens'), completion_tokens: total('completion_tokens'), errors: 1 });
    // Routes of other tests' keys (the static key's) are not in this sum: only these two keys ran.
    expect(rows.every((r) => r.key_id === a.record.id || r.key_id === b.record.id)).toBe(true);

    // Filters: one key by name, one route, grouped by model.
    const onlyA = await get(t, `/admin/usage?key=usage-a&route=/v1/chat/completions&group_by=model`, t.key);
    expect(onlyA.body.data).toEqual([
      expect.objectContaining({ model: 'stories260K', requests: 2, completion_tokens: expected[a.record.id]['/v1/chat/completions'].completion_tokens }),
    ]);
    const byDay = await get(t, '/admin/usage?group_by=day&from=1d', t.key);
    expect(byDay.body.data).toEqual([expect.objectContaining({ day: new Date().toISOString().slice(0, 10), requests: 10 })]);

    // The caller's own usage: B sees B only, whatever it asks.
    const own = await get(t, '/v1/usage?group_by=route', b.key);
    expect(own.status).toBe(200);
    expect(own.body).toMatchObject({ key_id: b.record.id, budgets: [], totals: { requests: 4, completion_tokens: total('completion_tokens') - Object.values(expected[a.record.id]).reduce((s, e) => s + e.completion_tokens, 0) } });
    expect((await get(t, `/v1/usage?key=${a.record.id}`, b.key)).body.error).toMatchObject({ code: 'validation_error', param: 'key' });
    // Reports are for admins; the own-usage route for any key.
    expect((await get(t, '/admin/usage', b.key)).body.error.code).toBe('insufficient_scope');
    expect((await get(t, '/admin/usage?group_by=week', t.key)).body.error).toMatchObject({ code: 'invalid_usage_query', param: 'group_by' });
    expect((await get(t, '/admin/usage?from=yesterday', t.key)).status).toBe(400);
    expect((await get(t, '/admin/usage?key=nobody', t.key)).body.error.code).toBe('api_key_not_found');

    // The CLI reads the same database.
    const cli = await runCli(['usage', '--group-by', 'key,route', '--json'], { DATA_DIR: t.config.dataDir });
    expect(cli.code).toBe(0);
    const cliReport = JSON.parse(cli.stdout);
    expect(cliReport.data).toEqual(expect.arrayContaining(rows));
    expect(cliReport.totals).toEqual(report.body.totals);
    const table = await runCli(['usage', '--key', 'usage-b', '--group-by', 'route'], { DATA_DIR: t.config.dataDir });
    expect(table.code).toBe(0);
    const chatB = expected[b.record.id]['/v1/chat/completions'];
    expect(table.stdout).toMatch(new RegExp(`/v1/chat/completions\\s+3\\s+${chatB.prompt_tokens}\\s+\\d+\\s+${chatB.completion_tokens}\\s+${chatB.prompt_tokens + chatB.completion_tokens}\\s+0\\s+0`));
    expect(table.stdout).toMatch(/^TOTAL\s+4\s/m);
    expect((await runCli(['usage', '--since', 'whenever'], { DATA_DIR: t.config.dataDir })).code).toBe(2);
  });

  it('exposes the ledger and budget metrics', async () => {
    await t.app.get(UsageLedgerService).flush();
    const s = await scrape(t.url);
    for (const name of ['llm_budget_exceeded_total', 'llm_usage_flush_failures_total', 'llm_usage_dropped_total']) expect(s.declared.has(name)).toBe(true);
    expect(metric(s, 'llm_usage_flush_duration_seconds_count')).toBeGreaterThan(0);
    expect(metric(s, 'llm_usage_flush_lag_seconds')).toBe(0);
    expect(metric(s, 'llm_usage_buffered_buckets')).toBe(0);
  });
});

describe('budgets over HTTP', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ CACHE_ENABLED: 'false', BUDGET_WARN_FRACTION: '0.75' });
  });
  afterAll(() => t.close());

  it('warns near the limit, then answers 429 budget_exceeded with the reset time; own usage stays readable', async () => {
    const { key } = await t.app.get(ApiKeysService).create({ name: 'budgeted', budgetDay: 40 });
    const story = { prompt: 'Once upon a time', max_tokens: 8, ignore_eos: true, temperature: 0.9 };
    const first = await post(t.url, '/v1/generate', key, story);
    expect(first.status).toBe(200);
    expect(first.headers.get("x-budget-remaining-tokens")).toBeNull(); // 40 left: more than 75%
    const second = await post(t.url, '/v1/generate', key, story);
    expect(second.status).toBe(200);
    const used = first.body.usage.total_tokens + second.body.usage.total_tokens;
    // The header reports what was left when the request was admitted.
    expect(second.headers.get('x-budget-remaining-tokens')).toBe(String(40 - first.body.usage.total_tokens));
    while ((await get(t, '/v1/usage', key)).body.budgets[0].remaining > 0) expect((await post(t.url, '/v1/generate', key, story)).status).toBe(200);
    const before = metric(await scrape(t.url), 'llm_budget_exceeded_total', { period: 'day' });
    const refused = await post(t.url, '/v1/chat/completions', key, { messages: [{ role: 'user', content: 'Hi' }] });
    expect(refused.status).toBe(429);
    const tomorrow = new Date(Math.floor(Date.now() / 86_400_000 + 1) * 86_400_000).toISOString();
    expect(refused.body.error).toMatchObject({ type: 'rate_limit_error', code: 'budget_exceeded' });
    expect(refused.body.error.message).toMatch(new RegExp(`^Token budget of this API key is spent: \\d+ of 40 tokens used this day \\(UTC\\); it resets at ${tomorrow}$`));
    expect(refused.headers.get('x-budget-reset')).toBe(tomorrow);
    expect(refused.headers.get('x-budget-remaining-tokens')).toBe('0');
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(metric(await scrape(t.url), 'llm_budget_exceeded_total', { period: 'day' })).toBe(before + 1);
    const own = await get(t, '/v1/usage', key);
    expect(own.status).toBe(200);
    expect(own.body.budgets).toEqual([{ period: 'day', limit: 40, used: expect.any(Number), remaining: 0, resets_at: tomorrow }]);
    expect(used).toBeLessThan(40);
  });

  it('parallel requests overshoot by at most one reservation (prompt + max_tokens)', async () => {
    const limit = 150;
    const { key } = await t.app.get(ApiKeysService).create({ name: 'parallel', budgetDay: limit, concurrency: 0 });
    const body = { prompt: 'Once upon a time', max_tokens: 20, ignore_eos: true, temperature: 0.9 };
    const replies = await Promise.all(Array.from({ length: 12 }, () => post(t.url, '/v1/generate', key, body)));
    const served = replies.filter((r) => r.status === 200);
    const refused = replies.filter((r) => r.status !== 200);
    expect(refused.every((r) => r.status === 429 && r.body.error.code === 'budget_exceeded')).toBe(true);
    const reservation = served[0].body.usage.prompt_tokens + 20; // what each request holds while it runs
    const spent = served.reduce((s, r) => s + r.body.usage.total_tokens, 0);
    expect(refused.length).toBeGreaterThan(0);
    expect(spent).toBeGreaterThan(limit - reservation);
    expect(spent).toBeLessThanOrEqual(limit + reservation);
    const own = await get(t, '/v1/usage', key);
    expect(own.body.budgets[0].used).toBe(spent);
    // Refusals are requests of the key too: errors without tokens.
    expect(own.body.totals).toMatchObject({ requests: replies.length, total_tokens: spent, errors: refused.length });
  });

  it('a cache hit costs no budget and is counted as a hit', async () => {
    const c = await startTestApp({ CACHE_ENABLED: 'true' });
    try {
      const { key, record } = await c.app.get(ApiKeysService).create({ name: 'cached', budgetDay: 1000 });
      const body = { prompt: 'Once upon a time', max_tokens: 6, temperature: 0 };
      const miss = await post(c.url, '/v1/generate', key, body);
      const hit = await post(c.url, '/v1/generate', key, body);
      expect(hit.headers.get('x-cache')).toBe('HIT');
      const own = await get(c, '/v1/usage', key);
      expect(own.body.totals).toMatchObject({ requests: 2, cache_hits: 1, total_tokens: miss.body.usage.total_tokens });
      expect(own.body.budgets[0].used).toBe(miss.body.usage.total_tokens);
      expect(own.body.key_id).toBe(record.id);
    } finally {
      await c.close();
    }
  });
});

describe('key administration over HTTP (/admin/keys)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ KEY_CACHE_TTL_MS: '0' });
  });
  afterAll(() => t.close());

  const call = async (method: string, path: string, key: string, body?: object) => {
    const res = await fetch(`${t.url}${path}`, { method, headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' }, body: body && JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };

  it('creates, lists, updates limits and budgets, rotates and revokes', async () => {
    const created = await call('POST', '/admin/keys', t.key, { name: 'web', scopes: ['generate'], rpm: 7, budget_day: 1000, budget_month: 20000, priority: 'high' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'web', status: 'active', limits: { rpm: 7 }, budget: { day: 1000, month: 20000 }, priority: 'high', key: expect.stringMatching(/^sk-llm-/) });
    expect((await post(t.url, '/v1/generate', created.body.key, { prompt: 'Hi', max_tokens: 2 })).status).toBe(200);
    const list = await call('GET', '/admin/keys', t.key);
    expect(list.body.data.find((k: { name: string }) => k.name === 'web')).not.toHaveProperty('key');
    const updated = await call('PATCH', '/admin/keys/web', t.key, { budget_day: 0, tpm: 500 });
    expect(updated.body).toMatchObject({ limits: { rpm: 7, tpm: 500 }, budget: { day: 0, month: 20000 } });
    const rotated = await call('POST', `/admin/keys/${created.body.id}/rotate`, t.key);
    expect(rotated.body.key).not.toBe(created.body.key);
    expect((await post(t.url, '/v1/generate', created.body.key, { prompt: 'Hi', max_tokens: 2 })).body.error.code).toBe('invalid_api_key');
    const revoked = await call('DELETE', '/admin/keys/web', t.key);
    expect(revoked.body).toMatchObject({ status: 'revoked', already_revoked: false });
    expect((await post(t.url, '/v1/generate', rotated.body.key, { prompt: 'Hi', max_tokens: 2 })).body.error.code).toBe('api_key_revoked');
    expect((await call('PATCH', '/admin/keys/web', t.key, { rpm: 1 })).body.error.code).toBe('api_key_not_found');
  });

  it('validates bodies and needs the admin scope', async () => {
    const bad = await call('POST', '/admin/keys', t.key, { name: 'x', budget_day: -1, scopes: ['root'] });
    expect(bad.status).toBe(400);
    expect(bad.body.error.details.map((d: { field: string }) => d.field).sort()).toEqual(['budget_day', 'scopes']);
    expect((await call('POST', '/admin/keys', t.key, { name: 'has space' })).body.error.code).toBe('invalid_key_options');
    expect((await call('POST', '/admin/keys', t.key, { name: 'exp', expires: 'soon' })).body.error.code).toBe('invalid_key_options');
    const { key } = await t.app.get(ApiKeysService).create({ name: 'plain' });
    expect((await call('GET', '/admin/keys', key)).status).toBe(403);
    expect((await call('GET', '/admin/status', key)).status).toBe(403);
  });

  it('/admin/status reads the same figures as /metrics', async () => {
    await post(t.url, '/v1/generate', t.key, { prompt: 'Hi', max_tokens: 3, temperature: 0.9 });
    const status = await call('GET', '/admin/status', t.key);
    const s = await scrape(t.url);
    expect(status.body.models).toEqual([expect.objectContaining({ id: 'stories260K', state: 'ready', backend: 'cpu', slots: 2 })]);
    expect(status.body.scheduler).toMatchObject({ slots_total: metric(s, 'llm_slots_total'), queue_capacity: metric(s, 'llm_queue_capacity'), kv_cache_capacity_tokens: metric(s, 'llm_kv_cache_capacity_tokens') });
    expect(status.body.tokens.generated).toBe(metric(s, 'llm_tokens_generated_total'));
    expect(status.body.cache.exact.miss).toBe(metric(s, 'llm_cache_lookups_total', { cache: 'exact', result: 'miss' }));
  });
});

describe('console serving', () => {
  let t: TestApp;
  let off: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
    off = await startTestApp({ CONSOLE_ENABLED: 'false' });
  });
  afterAll(async () => {
    await t.close();
    await off.close();
  });

  it('serves the built page and its bundle under a strict CSP; the API keeps its headers; off when disabled', async () => {
    const page = await fetch(`${t.url}/console/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<script defer src="/console/app.js"></script>');
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toMatch(/unsafe|https?:|\*/);
    const js = await fetch(`${t.url}/console/app.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/javascript/);
    expect((await js.text()).length).toBeGreaterThan(1000);
    const api = await fetch(`${t.url}/health`);
    expect(api.headers.get('content-security-policy')).toBeNull();
    expect(api.headers.get('x-content-type-options')).toBe('nosniff');
    expect((await fetch(`${off.url}/console/`)).status).toBe(404);
  });
});
