import { connect } from 'node:net';
import request from 'supertest';
import { startTestApp, TestApp } from './support/test-app';

/** Every bound of the seed's request contract, below and above, plus wrong types. */
describe('request validation and error envelopes', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ BODY_LIMIT: '16kb', BODY_TIMEOUT_MS: '300' });
  });
  afterAll(() => t.close());

  const post = (body: unknown) =>
    request(t.url).post('/v1/generate').set('Authorization', `Bearer ${t.key}`).send(body as object);

  const cases: [string, Record<string, unknown>, string][] = [
    ['missing prompt', {}, 'prompt'],
    ['empty prompt', { prompt: '' }, 'prompt'],
    ['prompt over 4096 chars', { prompt: 'a'.repeat(4097) }, 'prompt'],
    ['prompt not a string', { prompt: 42 }, 'prompt'],
    ['max_tokens 0', { prompt: 'a', max_tokens: 0 }, 'max_tokens'],
    ['max_tokens 2049', { prompt: 'a', max_tokens: 2049 }, 'max_tokens'],
    ['max_tokens fractional', { prompt: 'a', max_tokens: 1.5 }, 'max_tokens'],
    ['max_tokens negative', { prompt: 'a', max_tokens: -3 }, 'max_tokens'],
    ['max_tokens as string', { prompt: 'a', max_tokens: '5' }, 'max_tokens'],
    ['temperature below 0', { prompt: 'a', temperature: -0.01 }, 'temperature'],
    ['temperature above 2', { prompt: 'a', temperature: 2.01 }, 'temperature'],
    ['temperature as string', { prompt: 'a', temperature: 'hot' }, 'temperature'],
    ['top_p below 0', { prompt: 'a', top_p: -0.1 }, 'top_p'],
    ['top_p above 1', { prompt: 'a', top_p: 1.1 }, 'top_p'],
    ['top_p null', { prompt: 'a', top_p: { a: 1 } }, 'top_p'],
    ['stop_sequences not an array', { prompt: 'a', stop_sequences: 'x' }, 'stop_sequences'],
    ['stop_sequences with a number', { prompt: 'a', stop_sequences: [1] }, 'stop_sequences'],
    ['too many stop_sequences', { prompt: 'a', stop_sequences: Array.from({ length: 17 }, (_, i) => `s${i}`) }, 'stop_sequences'],
    ['stream not a boolean', { prompt: 'a', stream: 'yes' }, 'stream'],
  ];

  it.each(cases)('%s → 400 naming the field', async (_name, body, field) => {
    const res = await post(body).expect(400);
    expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'validation_error', param: field });
    expect(res.body.error.message).toContain(field);
    expect(res.body.error.details.map((d: { field: string }) => d.field)).toContain(field);
  });

  it('names every bad field at once', async () => {
    const res = await post({ prompt: '', max_tokens: 0, temperature: 3 }).expect(400);
    expect(res.body.error.details.map((d: { field: string }) => d.field).sort()).toEqual(['max_tokens', 'prompt', 'temperature']);
  });

  it('accepts each bound exactly', async () => {
    await post({ prompt: 'a', max_tokens: 1, temperature: 0, top_p: 0 }).expect(200);
    await post({ prompt: 'a', max_tokens: 1, temperature: 2, top_p: 1 }).expect(200);
  });

  it('a JSON array or scalar body is a 400, not a crash', async () => {
    const res = await post([1, 2]).expect(400);
    expect(res.body.error.type).toBe('invalid_request_error');
  });

  it('malformed JSON → 400 envelope', async () => {
    const res = await request(t.url)
      .post('/v1/generate')
      .set('Authorization', `Bearer ${t.key}`)
      .set('Content-Type', 'application/json')
      .send('{"prompt": ')
      .expect(400);
    expect(res.body.error).toEqual({ message: expect.any(String), type: 'invalid_request_error', code: 'malformed_json' });
  });

  it('a non-JSON Content-Type → 415 envelope', async () => {
    const res = await request(t.url)
      .post('/v1/generate')
      .set('Authorization', `Bearer ${t.key}`)
      .set('Content-Type', 'text/plain')
      .send('prompt=hello')
      .expect(415);
    expect(res.body.error.code).toBe('unsupported_media_type');
  });

  it('a body over BODY_LIMIT → 413 envelope', async () => {
    const res = await post({ prompt: 'a'.repeat(20_000) }).expect(413);
    expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'payload_too_large' });
  });

  it('a body that never arrives → 408 envelope within BODY_TIMEOUT_MS, connection closed', async () => {
    const { hostname, port } = new URL(t.url);
    const started = Date.now();
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), hostname, () => {
        // 1,000 bytes announced, 12 sent, then silence (the socket stays open).
        socket.write(
          `POST /v1/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.key}\r\n` +
            'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"prompt": "',
        );
      });
      let data = '';
      socket.on('data', (d: Buffer) => (data += d.toString()));
      socket.on('close', () => resolve(data));
      socket.on('error', reject);
    });
    expect(Date.now() - started).toBeLessThan(5000);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(answer).toMatch(/connection: close/i);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { error: { code: string; type: string } };
    expect(body.error).toMatchObject({ type: 'invalid_request_error', code: 'request_timeout' });
    // The server goes on serving.
    await post({ prompt: 'a', max_tokens: 1 }).expect(200);
  });

  it('an unknown route → 404 envelope', async () => {
    const res = await request(t.url).get('/v1/nothing-here').expect(404);
    expect(res.body.error).toMatchObject({ type: 'not_found_error', code: 'route_not_found' });
  });

  it('no key → 401 envelope; wrong key → 401 envelope', async () => {
    const none = await request(t.url).post('/v1/generate').send({ prompt: 'a' }).expect(401);
    expect(none.body.error).toMatchObject({ type: 'authentication_error', code: 'missing_api_key' });
    expect(none.headers['www-authenticate']).toBe('Bearer');
    const wrong = await request(t.url).post('/v1/generate').set('Authorization', 'Bearer nope').send({ prompt: 'a' }).expect(401);
    expect(wrong.body.error).toMatchObject({ type: 'authentication_error', code: 'invalid_api_key' });
    expect(JSON.stringify(wrong.body)).not.toContain('nope');
    await request(t.url).get('/v1/models').set('X-API-Key', 'nope').expect(401);
  });

  it('OpenAI routes validate too, naming the field', async () => {
    const res = await request(t.url)
      .post('/v1/chat/completions')
      .set('Authorization', `Bearer ${t.key}`)
      .send({ messages: [{ role: 'wizard', content: 'hi' }], temperature: 5 })
      .expect(400);
    const fields = res.body.error.details.map((d: { field: string }) => d.field);
    expect(fields).toEqual(expect.arrayContaining(['messages.0.role', 'temperature']));
    const empty = await request(t.url)
      .post('/v1/chat/completions')
      .set('Authorization', `Bearer ${t.key}`)
      .send({ messages: [] })
      .expect(400);
    expect(empty.body.error.param).toBe('messages');
  });

  it('an unknown model → 404 model_not_found', async () => {
    const res = await request(t.url)
      .post('/v1/completions')
      .set('Authorization', `Bearer ${t.key}`)
      .send({ model: 'gpt-4', prompt: 'hi' })
      .expect(404);
    expect(res.body.error).toMatchObject({ type: 'not_found_error', code: 'model_not_found', param: 'model' });
  });
});
