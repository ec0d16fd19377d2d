import request from 'supertest';
import { metric, scrape } from './support/metrics';
import { startTestApp, TestApp } from './support/test-app';

/** Cache lookups and rate-limit refusals reach /metrics (the features and the metrics meet in the app). */
describe('feature metrics wiring', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ RATE_LIMIT_IP_RPM: '3', KEY_DEFAULT_RPM: '0' });
  });
  afterAll(() => t.close());

  it('a cache miss then hit count in llm_cache_lookups_total; a 429 in llm_rate_limited_total', async () => {
    const started = performance.now();
    const before = await scrape(t.url);
    const body = { prompt: 'Once upon a time, a frog', max_tokens: 5, temperature: 0 };
    const first = await request(t.url).post('/v1/generate').set('Authorization', `Bearer ${t.key}`).send(body).expect(200);
    const second = await request(t.url).post('/v1/generate').set('Authorization', `Bearer ${t.key}`).send(body).expect(200);
    expect([first.headers['x-cache'], second.headers['x-cache']]).toEqual(['MISS', 'HIT']);
    await request(t.url).post('/v1/generate').set('Authorization', `Bearer ${t.key}`).send(body).expect(200);
    const refused = await request(t.url).post('/v1/generate').set('Authorization', `Bearer ${t.key}`).send(body).expect(429);
    expect(refused.body.error.type).toBe('rate_limit_error');
    const after = await scrape(t.url);
    const delta = (name: string, labels: Record<string, string>) => metric(after, name, labels) - metric(before, name, labels);
    expect(delta('llm_cache_lookups_total', { cache: 'exact', result: 'miss' })).toBe(1);
    expect(delta('llm_cache_lookups_total', { cache: 'exact', result: 'hit' })).toBe(2);
    expect(delta('llm_rate_limited_total', { kind: 'requests' })).toBe(1);
    // The main thread's own CPU (Linux): some for those requests, and one thread cannot use more than the time that passed.
    if (process.platform === 'linux') {
      const cpu = metric(after, 'llm_event_loop_cpu_seconds_total') - metric(before, 'llm_event_loop_cpu_seconds_total');
      expect(cpu).toBeGreaterThan(0);
      expect(cpu).toBeLessThanOrEqual((performance.now() - started) / 1000);
    }
  });
});
