import http from 'node:http';
import request from 'supertest';
import { MetricsService } from '@app/observability';
import { has, metric, scrape, waitFor } from './support/metrics';
import { parseSse, startTestApp, TestApp } from './support/test-app';

describe('/metrics on the bundled model', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ PARALLEL_SLOTS: '2', CONTEXT_SIZE: '2048' });
  });
  afterAll(() => t.close());

  const auth = (): Record<string, string> => ({ Authorization: `Bearer ${t.key}` });

  it('is served without a key in the Prometheus text format, with the seed series and Node process metrics', async () => {
    const res = await request(t.url).get('/metrics').expect(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain.*version=0\.0\.4/);
    const s = await scrape(t.url);
    for (const name of ['llm_requests_total', 'llm_request_duration_seconds', 'llm_tokens_generated_total', 'llm_active_requests', 'gpu_utilization_percent']) {
      expect(s.declared).toContain(name);
    }
    expect(s.text).toContain('# TYPE llm_request_duration_seconds histogram');
    expect(has(s, 'process_cpu_user_seconds_total')).toBe(true);
    expect(has(s, 'nodejs_eventloop_lag_seconds')).toBe(true);
    expect(metric(s, 'llm_model_ready')).toBe(1);
    expect(metric(s, 'llm_model_info', { model: 'stories260K', backend: 'cpu' })).toBe(1);
    expect(metric(s, 'llm_slots_total')).toBe(2);
    expect(metric(s, 'llm_kv_cache_capacity_tokens')).toBe(2 * 2048);
  });

  it('moves as requests run: counters, histograms, then gauges back to zero', async () => {
    const before = await scrape(t.url);
    const plain = await request(t.url).post('/v1/generate').set(auth()).send({ prompt: 'Once upon a time', max_tokens: 12, temperature: 0 }).expect(200);
    const stream = await request(t.url).post('/v1/generate/stream').set(auth()).send({ prompt: 'The cat', max_tokens: 8, ignore_eos: true }).expect(200);
    const streamUsage = JSON.parse(parseSse(stream.text).at(-1) as string).usage;
    const after = await scrape(t.url);
    const delta = (name: string, labels?: Record<string, string>): number => metric(after, name, labels) - metric(before, name, labels);

    expect(delta('llm_requests_total', { endpoint: '/v1/generate', status: '200' })).toBe(1);
    expect(delta('llm_requests_total', { endpoint: '/v1/generate/stream', status: '200' })).toBe(1);
    expect(delta('llm_request_duration_seconds_count', { endpoint: '/v1/generate' })).toBe(1);
    expect(delta('llm_request_duration_seconds_sum', { endpoint: '/v1/generate' })).toBeGreaterThan(0);
    expect(delta('llm_tokens_generated_total', { model: 'stories260K' })).toBe(plain.body.usage.completion_tokens + 8);
    expect(delta('llm_prompt_tokens_total', { model: 'stories260K' })).toBe(plain.body.usage.prompt_tokens + streamUsage.prompt_tokens);
    expect(delta('llm_time_to_first_token_seconds_count')).toBe(2);
    expect(delta('llm_time_to_first_token_seconds_sum')).toBeGreaterThan(0);
    // one observation per token after the first of each request
    expect(delta('llm_inter_token_latency_seconds_count')).toBe(plain.body.usage.completion_tokens - 1 + 7);
    expect(delta('llm_queue_wait_seconds_count')).toBe(2);
    expect(delta('llm_generations_total', { finish_reason: 'length' })).toBe(2);
    expect(metric(after, 'llm_active_requests')).toBe(0);
    expect(metric(after, 'llm_slots_busy')).toBe(0);
    expect(metric(after, 'llm_queue_depth')).toBe(0);
    // the slots keep their tokens for prefix reuse
    expect(metric(after, 'llm_kv_cache_tokens')).toBeGreaterThan(0);
  });

  it('counts prompt tokens served from the prefix (KV) cache as the API reports them', async () => {
    const prompt = 'Once upon a time there was a little dog who liked to run in the park with his friends';
    const before = await scrape(t.url);
    const usages: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } }[] = [];
    for (let i = 0; i < 2; i++) {
      // Past the response cache: the KV prefix cache is what this counts.
      const res = await request(t.url)
        .post('/v1/completions')
        .set(auth())
        .set('Cache-Control', 'no-cache, no-store')
        .send({ model: 'stories260K', prompt, max_tokens: 4, temperature: 0 })
        .expect(200);
      usages.push(res.body.usage);
    }
    const after = await scrape(t.url);
    const cached = usages.reduce((sum, u) => sum + u.prompt_tokens_details.cached_tokens, 0);
    expect(usages[1].prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    expect(metric(after, 'llm_prompt_tokens_cached_total') - metric(before, 'llm_prompt_tokens_cached_total')).toBe(cached);
  });

  it('shows busy slots and a queue under load, records queue waits, and returns to zero', async () => {
    const before = await scrape(t.url);
    const body = { prompt: 'Once upon a time', max_tokens: 150, ignore_eos: true, temperature: 0 };
    // Past the response cache: five identical temperature-0 requests are one cache entry, and a
    // request whose connection is read after the first answer was stored (a loaded CI machine)
    // would be a cache hit that never queues.
    const runs = Array.from({ length: 5 }, () => request(t.url).post('/v1/generate').set(auth()).set('Cache-Control', 'no-cache, no-store').send(body));
    const done = Promise.all(runs.map((r) => r.then((res) => res.status)));
    let peak = { busy: 0, queue: 0, active: 0 };
    await waitFor(async () => {
      const s = await scrape(t.url);
      peak = {
        busy: Math.max(peak.busy, metric(s, 'llm_slots_busy')),
        queue: Math.max(peak.queue, metric(s, 'llm_queue_depth')),
        active: Math.max(peak.active, metric(s, 'llm_active_requests')),
      };
      return peak.busy === 2 && peak.queue >= 1;
    }, 20_000, 'two busy slots and a queue');
    expect(await done).toEqual([200, 200, 200, 200, 200]);
    expect(peak.active).toBeGreaterThanOrEqual(3);
    const after = await scrape(t.url);
    expect(metric(after, 'llm_queue_wait_seconds_count') - metric(before, 'llm_queue_wait_seconds_count')).toBe(5);
    expect(metric(after, 'llm_queue_wait_seconds_sum') - metric(before, 'llm_queue_wait_seconds_sum')).toBeGreaterThan(0);
    expect(metric(after, 'llm_slots_busy')).toBe(0);
    expect(metric(after, 'llm_queue_depth')).toBe(0);
    expect(metric(after, 'llm_active_requests')).toBe(0);
  });

  it('counts a generation whose client went away as aborted, and the request as 499', async () => {
    const before = await scrape(t.url);
    await new Promise<void>((resolve, reject) => {
      const req = http.request(`${t.url}/v1/generate/stream`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...auth() } });
      req.on('response', (res) => res.once('data', () => (req.destroy(), resolve())));
      req.on('error', (err) => (String(err).includes('socket hang up') ? resolve() : reject(err)));
      req.end(JSON.stringify({ prompt: 'Once upon a time', max_tokens: 2000, ignore_eos: true }));
    });
    await waitFor(async () => metric(await scrape(t.url), 'llm_requests_aborted_total') > metric(before, 'llm_requests_aborted_total'), 10_000, 'abort counted');
    const after = await scrape(t.url);
    expect(metric(after, 'llm_requests_aborted_total') - metric(before, 'llm_requests_aborted_total')).toBe(1);
    expect(metric(after, 'llm_generations_total', { finish_reason: 'abort' }) - metric(before, 'llm_generations_total', { finish_reason: 'abort' })).toBe(1);
    expect(metric(after, 'llm_requests_total', { endpoint: '/v1/generate/stream', status: '499' }) - metric(before, 'llm_requests_total', { endpoint: '/v1/generate/stream', status: '499' })).toBe(1);
    expect(metric(after, 'llm_active_requests')).toBe(0);
  });

  it('keeps labels bounded: route templates, "unmatched" for unknown paths, early rejections under their route', async () => {
    await request(t.url).get('/v1/no-such-route/12345?x=1').expect(404);
    await request(t.url).get('/v1/models/some-model-id').set(auth()).expect(404);
    await request(t.url).post('/v1/generate').set(auth()).set('Content-Type', 'text/plain').send('hello').expect(415);
    await request(t.url).post('/v1/generate').set(auth()).send({ prompt: 'x' }).set('Authorization', 'Bearer wrong').expect(401);
    const s = await scrape(t.url);
    expect(s.text).not.toContain('no-such-route');
    expect(s.text).not.toContain('some-model-id');
    expect(metric(s, 'llm_requests_total', { endpoint: 'unmatched', status: '404' })).toBeGreaterThanOrEqual(1);
    expect(metric(s, 'llm_requests_total', { endpoint: '/v1/models/:id', status: '404' })).toBeGreaterThanOrEqual(1);
    expect(metric(s, 'llm_requests_total', { endpoint: '/v1/generate', status: '415' })).toBe(1);
    expect(metric(s, 'llm_requests_total', { endpoint: '/v1/generate', status: '401' })).toBe(1);
    // probes and scrapes are not request traffic
    expect(s.samples.some((x) => x.name === 'llm_requests_total' && /^\/(health|metrics)/.test(x.labels.endpoint))).toBe(false);
    // no key material or prompt text in any label
    expect(s.text).not.toContain(t.key);
    expect(s.text).not.toContain('Once upon');
  });

  it('has cache and rate-limit series at zero from the start, moved by the MetricsService API', async () => {
    const before = await scrape(t.url);
    for (const cache of ['exact', 'semantic']) for (const result of ['hit', 'miss', 'error']) expect(has(before, 'llm_cache_lookups_total', { cache, result })).toBe(true);
    for (const kind of ['requests', 'tokens', 'concurrency']) expect(has(before, 'llm_rate_limited_total', { kind })).toBe(true);
    const metrics = t.app.get(MetricsService);
    metrics.cacheLookup('exact', 'hit');
    await expect(metrics.traceCacheLookup('semantic', async () => undefined)).resolves.toBeUndefined();
    await expect(metrics.traceCacheLookup('semantic', async () => 'cached answer')).resolves.toBe('cached answer');
    await expect(metrics.traceCacheLookup('exact', async () => Promise.reject(new Error('redis down')))).rejects.toThrow('redis down');
    metrics.rateLimited('tokens');
    const after = await scrape(t.url);
    const delta = (name: string, labels: Record<string, string>): number => metric(after, name, labels) - metric(before, name, labels);
    expect(delta('llm_cache_lookups_total', { cache: 'exact', result: 'hit' })).toBe(1);
    expect(delta('llm_cache_lookups_total', { cache: 'exact', result: 'error' })).toBe(1);
    expect(delta('llm_cache_lookups_total', { cache: 'semantic', result: 'miss' })).toBe(1);
    expect(delta('llm_cache_lookups_total', { cache: 'semantic', result: 'hit' })).toBe(1);
    expect(delta('llm_rate_limited_total', { kind: 'tokens' })).toBe(1);
  });

  it('says plainly that there is no GPU on a CPU-only machine', async () => {
    const s = await scrape(t.url);
    expect(metric(s, 'gpu_available')).toBe(0);
    expect(has(s, 'gpu_utilization_percent')).toBe(false);
    expect(has(s, 'gpu_memory_used_bytes')).toBe(false);
    expect(s.declared).toContain('gpu_utilization_percent');
  });
});
