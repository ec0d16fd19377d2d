import http from 'node:http';
import request from 'supertest';
import { InferenceService } from '@app/inference';
import { startTestApp, TestApp } from './support/test-app';

/** Opens a stream, reads until the first event, then drops the connection. */
function openAndDrop(url: string, key: string, path: string, body: object): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` },
    });
    req.on('response', (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (err) => (String(err).includes('socket hang up') ? resolve() : reject(err)));
    req.end(JSON.stringify(body));
  });
}

async function waitFor(check: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('client disconnects', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ PARALLEL_SLOTS: '1', QUEUE_MAX: '0', CONTEXT_SIZE: '2048' });
  });
  afterAll(() => t.close());

  it('a dropped stream frees its slot at once and the next request is served', async () => {
    const inference = t.app.get(InferenceService);
    const before = inference.generatedTokens;
    // ignore_eos: the generation would run all 2,000 tokens unless the drop stops it.
    await openAndDrop(t.url, t.key, '/v1/generate/stream', { prompt: 'Once upon a time', max_tokens: 2000, ignore_eos: true });
    await waitFor(() => inference.scheduler.busySlots === 0, 5000);
    expect(inference.generatedTokens - before).toBeLessThan(500);
    // With one slot and no queue, this would be a 429 if the slot had leaked.
    const res = await request(t.url)
      .post('/v1/generate')
      .set('Authorization', `Bearer ${t.key}`)
      .send({ prompt: 'Hello', max_tokens: 5 })
      .expect(200);
    expect(res.body.usage.completion_tokens).toBe(5);
  });

  it('a dropped OpenAI stream frees its slot too', async () => {
    const inference = t.app.get(InferenceService);
    const before = inference.generatedTokens;
    await openAndDrop(t.url, t.key, '/v1/chat/completions', {
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 2000,
      ignore_eos: true,
      stream: true,
    });
    await waitFor(() => inference.scheduler.busySlots === 0, 5000);
    expect(inference.generatedTokens - before).toBeLessThan(500);
    await request(t.url).post('/v1/completions').set('Authorization', `Bearer ${t.key}`).send({ prompt: 'Hi', max_tokens: 3 }).expect(200);
  });

  it('a busy single slot with no queue answers 429 with Retry-After', async () => {
    const inference = t.app.get(InferenceService);
    const long = request(t.url)
      .post('/v1/generate')
      .set('Authorization', `Bearer ${t.key}`)
      .send({ prompt: 'Once upon a time', max_tokens: 2000, ignore_eos: true })
      .then((r) => r);
    await waitFor(() => inference.scheduler.busySlots === 1, 2000);
    const res = await request(t.url)
      .post('/v1/generate')
      .set('Authorization', `Bearer ${t.key}`)
      .send({ prompt: 'Hello', max_tokens: 5 })
      .expect(429);
    expect(res.body.error).toMatchObject({ type: 'rate_limit_error', code: 'queue_full' });
    expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect((await long).status).toBe(200);
  });
});
