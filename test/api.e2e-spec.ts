import request from 'supertest';
import { parseSse, startTestApp, TestApp } from './support/test-app';

describe('seed API on the bundled model', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(() => t.close());

  const auth = (): Record<string, string> => ({ Authorization: `Bearer ${t.key}` });

  it('GET /health reports the loaded model without a key', async () => {
    const res = await request(t.url).get('/health').expect(200);
    expect(res.body).toEqual({ status: 'healthy', model_loaded: true, timestamp: expect.any(String) });
    expect(Number.isNaN(Date.parse(res.body.timestamp))).toBe(false);
  });

  it('POST /v1/generate answers with text and tokenizer counts', async () => {
    const res = await request(t.url)
      .post('/v1/generate')
      .set(auth())
      .send({ prompt: 'Once upon a time', max_tokens: 20, temperature: 0 })
      .expect(200);
    expect(res.body).toMatchObject({ id: expect.stringMatching(/^gen-/), model: 'stories260K', created: expect.any(Number) });
    expect(res.body.text.length).toBeGreaterThan(10);
    // "Once upon a time" is 4 SentencePiece tokens, plus BOS.
    expect(res.body.usage).toEqual({ prompt_tokens: 5, completion_tokens: 20, total_tokens: 25 });
    expect(res.body.finish_reason).toBe('length');
  });

  it('accepts the key as X-API-Key too', async () => {
    await request(t.url).post('/v1/generate').set('X-API-Key', t.key).send({ prompt: 'Hi', max_tokens: 2 }).expect(200);
  });

  it('streams one SSE event per generated chunk, then a done event with usage', async () => {
    const res = await request(t.url)
      .post('/v1/generate/stream')
      .set(auth())
      .send({ prompt: 'Once upon a time', max_tokens: 24, temperature: 0 })
      .expect(200)
      .expect('Content-Type', /text\/event-stream/);
    const events = parseSse(res.text).map((d) => JSON.parse(d));
    const chunks = events.filter((e) => !e.done);
    expect(chunks.length).toBeGreaterThan(5);
    expect(events.at(-1)).toMatchObject({ text: '', done: true, usage: { completion_tokens: 24 } });
    const plain = await request(t.url)
      .post('/v1/generate')
      .set(auth())
      .send({ prompt: 'Once upon a time', max_tokens: 24, temperature: 0 })
      .expect(200);
    expect(chunks.map((c) => c.text).join('')).toBe(plain.body.text);
  });

  it('stop_sequences end the text before the stop string', async () => {
    const res = await request(t.url)
      .post('/v1/generate')
      .set(auth())
      .send({ prompt: 'Once upon a time', max_tokens: 60, temperature: 0, stop_sequences: ['Lily'] })
      .expect(200);
    // The stop string and everything after it are cut (node-llama-cpp also drops the
    // whitespace that shares the stop string's token).
    expect(res.body.text).toMatch(/^, there was a little girl named ?$/);
    expect(res.body.finish_reason).toBe('stop');
  });

  it('POST /v1/generate with stream:true streams too', async () => {
    const res = await request(t.url)
      .post('/v1/generate')
      .set(auth())
      .send({ prompt: 'Once', max_tokens: 5, temperature: 0, stream: true })
      .expect(200)
      .expect('Content-Type', /text\/event-stream/);
    expect(JSON.parse(parseSse(res.text).at(-1) as string).done).toBe(true);
  });

  it('rejects a prompt that does not fit in the context with the sizes', async () => {
    const res = await request(t.url)
      .post('/v1/generate')
      .set(auth())
      .send({ prompt: 'Once upon a time there was a dog. '.repeat(100), max_tokens: 10 })
      .expect(400);
    expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'context_length_exceeded' });
    expect(res.body.error.message).toMatch(/prompt has \d+ tokens but the context holds 512 tokens/);
  });

  it('rejects prompt + max_tokens above the context, naming both', async () => {
    const res = await request(t.url).post('/v1/generate').set(auth()).send({ prompt: 'Once upon a time', max_tokens: 2000 }).expect(400);
    expect(res.body.error.code).toBe('context_length_exceeded');
    expect(res.body.error.message).toContain('5 in the prompt, 2000 for the completion');
    expect(res.body.error.param).toBe('max_tokens');
  });
});
