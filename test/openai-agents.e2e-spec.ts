import OpenAI from 'openai';
import request from 'supertest';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { InferenceService } from '@app/inference';
import { parseExposition } from './support/metrics';
import { parseSse, startTestApp, TestApp } from './support/test-app';

/**
 * What agents and structured-output users need, on the bundled model (no chat template: the
 * generic tool syntax): structured output that ends, logprobs, n, logit_bias, echo, prompt arrays,
 * token prompts, embeddings, and a 400 naming every refused field.
 */
describe('OpenAI API for agent clients', () => {
  let t: TestApp;
  let client: OpenAI;
  beforeAll(async () => {
    t = await startTestApp({ PARALLEL_SLOTS: '2', CONTEXT_SIZE: '1024' });
    client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: t.key, maxRetries: 0 });
  });
  afterAll(() => t.close());

  const post = (path: string, body: object) => request(t.url).post(path).set('Authorization', `Bearer ${t.key}`).send(body);
  const user = [{ role: 'user', content: 'Tell me about an animal.' }];

  describe('structured output that ends', () => {
    it('json_schema: finish_reason stop once the value is complete, types enforced (integer, enum, required, additionalProperties false)', async () => {
      const schema = {
        type: 'object',
        properties: { legs: { type: 'integer' }, kind: { enum: ['cat', 'dog', 'owl'] }, tame: { type: 'boolean' }, note: { type: 'string', maxLength: 8 } },
        required: ['legs', 'kind', 'tame'],
        additionalProperties: false,
      };
      for (const seed of [1, 2, 3, 4]) {
        // No max_tokens: the answer may use the whole context, but ends with the value.
        const r = await post('/v1/chat/completions', { messages: user, response_format: { type: 'json_schema', json_schema: { name: 'a', schema } }, temperature: 1, seed }).expect(200);
        const c = r.body.choices[0];
        expect(c.finish_reason).toBe('stop');
        expect(c.message.content).not.toMatch(/\s$/);
        const v = JSON.parse(c.message.content);
        expect(Number.isInteger(v.legs)).toBe(true);
        expect(c.message.content).not.toMatch(/"legs":\s*-?\d+[.eE]/);
        expect(['cat', 'dog', 'owl']).toContain(v.kind);
        expect(typeof v.tame).toBe('boolean');
        expect(Object.keys(v).every((k) => ['legs', 'kind', 'tame', 'note'].includes(k))).toBe(true);
      }
    });

    it('json_object ends too, and works on /v1/completions', async () => {
      const chat = await post('/v1/chat/completions', { messages: user, response_format: { type: 'json_object' }, temperature: 0, max_tokens: 300 }).expect(200);
      expect(['stop', 'length']).toContain(chat.body.choices[0].finish_reason);
      if (chat.body.choices[0].finish_reason === 'stop') expect(typeof JSON.parse(chat.body.choices[0].message.content)).toBe('object');
      const schema = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'], additionalProperties: false };
      const r = await post('/v1/completions', { prompt: 'A number:', response_format: { type: 'json_schema', json_schema: { schema } }, max_tokens: 200, temperature: 0 }).expect(200);
      expect(r.body.choices[0].finish_reason).toBe('stop');
      expect(Number.isInteger(JSON.parse(r.body.choices[0].text).n)).toBe(true);
    });

    it('the openai SDK: chat.completions.parse with a zod schema does not throw LengthFinishReasonError', async () => {
      const Animal = z.object({ kind: z.enum(['cat', 'dog']), legs: z.number().int(), tame: z.boolean() });
      const r = await client.chat.completions.parse({ model: 'stories260K', messages: [{ role: 'user', content: 'An animal?' }], response_format: zodResponseFormat(Animal, 'animal'), temperature: 0 });
      expect(r.choices[0].finish_reason).toBe('stop');
      expect(Animal.parse(r.choices[0].message.parsed)).toEqual(r.choices[0].message.parsed);
    });
  });

  describe('logprobs', () => {
    it('chat: the chosen token is the most likely at temperature 0; alternatives sorted; probabilities sum to at most 1', async () => {
      const r = await post('/v1/chat/completions', { messages: user, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 5 }).expect(200);
      const content = r.body.choices[0].logprobs.content as { token: string; logprob: number; bytes: number[]; top_logprobs: { token: string; logprob: number }[] }[];
      expect(content).toHaveLength(r.body.usage.completion_tokens);
      expect(content.map((c) => c.token).join('')).toBe(r.body.choices[0].message.content);
      for (const c of content) {
        expect(c.top_logprobs).toHaveLength(5);
        expect(c.logprob).toBeCloseTo(c.top_logprobs[0].logprob, 5);
        expect(c.logprob).toBeLessThanOrEqual(0);
        for (let i = 1; i < 5; i++) expect(c.top_logprobs[i].logprob).toBeLessThanOrEqual(c.top_logprobs[i - 1].logprob);
        expect(c.top_logprobs.reduce((s, x) => s + Math.exp(x.logprob), 0)).toBeLessThanOrEqual(1 + 1e-6);
        expect(Buffer.from(c.bytes).toString('utf8')).toBe(c.token);
      }
    });

    it('sampled tokens get their own (lower) logprob; streaming chunks carry logprobs; completions use the legacy shape', async () => {
      const sampled = await post('/v1/chat/completions', { messages: user, max_tokens: 20, temperature: 1.5, seed: 7, logprobs: true, top_logprobs: 1 }).expect(200);
      const entries = sampled.body.choices[0].logprobs.content as { logprob: number; top_logprobs: { logprob: number }[] }[];
      expect(entries.every((e) => e.logprob <= e.top_logprobs[0].logprob + 1e-6)).toBe(true);
      const stream = await post('/v1/chat/completions', { messages: user, max_tokens: 8, temperature: 0, logprobs: true, stream: true }).expect(200);
      const chunks = parseSse(stream.text).filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));
      const withText = chunks.filter((c) => c.choices[0]?.delta?.content);
      expect(withText.length).toBeGreaterThan(0);
      for (const c of withText) expect(c.choices[0].logprobs.content.length).toBeGreaterThan(0);
      const done = await post('/v1/completions', { prompt: 'Once upon a time', max_tokens: 6, temperature: 0, logprobs: 2 }).expect(200);
      const lp = done.body.choices[0].logprobs;
      expect(lp.tokens.join('')).toBe(done.body.choices[0].text);
      expect(lp.token_logprobs).toHaveLength(6);
      expect(Object.keys(lp.top_logprobs[0])).toHaveLength(2);
      expect(lp.text_offset[0]).toBe(0);
    });
  });

  describe('n, logit_bias, echo, prompt arrays, token prompts', () => {
    const scrape = async (name: string) =>
      parseExposition((await request(t.url).get('/metrics')).text).samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);

    it('n: 2 choices, each its own seed; the prompt is evaluated once and its KV copied to the other slot', async () => {
      const long = 'Once upon a time there was a little dog who liked to run in the park with his friends every single day. ';
      const before = await scrape('llm_prompt_tokens_cached_total');
      const r = await post('/v1/chat/completions', { messages: [{ role: 'user', content: long.repeat(2) }], n: 2, temperature: 1, seed: 11, max_tokens: 16, ignore_eos: true }).expect(200);
      const after = await scrape('llm_prompt_tokens_cached_total');
      expect(r.body.choices.map((c: { index: number }) => c.index)).toEqual([0, 1]);
      expect(r.body.choices[0].message.content).not.toBe(r.body.choices[1].message.content);
      const prompt = r.body.usage.prompt_tokens as number;
      expect(prompt).toBeGreaterThan(40);
      expect(r.body.usage.completion_tokens).toBe(32);
      // The second choice found every prompt token but the last in the first one's KV cache.
      expect(after - before).toBeGreaterThanOrEqual(prompt - 1);
      // Choice 1 with seed 11 is what a single request with seed 12 gives.
      const alone = await post('/v1/chat/completions', { messages: [{ role: 'user', content: long.repeat(2) }], temperature: 1, seed: 12, max_tokens: 16, ignore_eos: true }).expect(200);
      expect(alone.body.choices[0].message.content).toBe(r.body.choices[1].message.content);
      const big = await post('/v1/chat/completions', { messages: user, n: 3 }).expect(400);
      expect(big.body.error).toMatchObject({ code: 'unsupported_parameter', param: 'n' });
    });

    it('logit_bias -100 bans a token the model would otherwise pick', async () => {
      const inference = t.app.get(InferenceService);
      const body = { prompt: 'Once upon a time', max_tokens: 1, temperature: 0, logprobs: 1 };
      const plain = await post('/v1/completions', body).expect(200);
      const chosen = plain.body.choices[0].text as string;
      const ids = Array.from({ length: inference.model.vocabularySize }, (_, id) => id).filter((id) => inference.detokenize([id]) === chosen);
      expect(ids.length).toBeGreaterThan(0);
      const banned = await post('/v1/completions', { ...body, logit_bias: Object.fromEntries(ids.map((id) => [id, -100])) }).expect(200);
      const lp = banned.body.choices[0].logprobs;
      expect(banned.body.choices[0].text).not.toBe(chosen);
      // Log-probabilities are the model's own: the banned token is still its favourite.
      expect(Object.keys(lp.top_logprobs[0])).toEqual([chosen]);
      const bad = await post('/v1/completions', { prompt: 'x', logit_bias: { 99999: 5 } }).expect(400);
      expect(bad.body.error.param).toBe('logit_bias');
    });

    it('prompt arrays (one choice per prompt, in order), token prompts, echo', async () => {
      const inference = t.app.get(InferenceService);
      const each = await Promise.all(['The cat', 'The dog'].map((p) => post('/v1/completions', { prompt: p, max_tokens: 5, temperature: 0 })));
      const both = await post('/v1/completions', { prompt: ['The cat', 'The dog'], max_tokens: 5, temperature: 0 }).expect(200);
      expect(both.body.choices.map((c: { text: string }) => c.text)).toEqual(each.map((r) => r.body.choices[0].text));
      expect(both.body.usage.prompt_tokens).toBe(each[0].body.usage.prompt_tokens + each[1].body.usage.prompt_tokens);
      const ids = inference.tokenize('The cat');
      const tokens = await post('/v1/completions', { prompt: ids, max_tokens: 5, temperature: 0 }).expect(200);
      expect(tokens.body.choices[0].text).toBe(each[0].body.choices[0].text);
      const twoArrays = await post('/v1/completions', { prompt: [ids, inference.tokenize('The dog')], max_tokens: 5, temperature: 0, n: 2 }).expect(200);
      expect(twoArrays.body.choices).toHaveLength(4);
      const echo = await post('/v1/completions', { prompt: 'The cat', max_tokens: 5, temperature: 0, echo: true }).expect(200);
      expect(echo.body.choices[0].text).toBe(`The cat${each[0].body.choices[0].text}`);
      const badToken = await post('/v1/completions', { prompt: [1, 2, 1_000_000] }).expect(400);
      expect(badToken.body.error.param).toBe('prompt');
    });
  });

  it('embeddings: unit length, token-id inputs, dimensions refused unless it is the model\'s', async () => {
    const r = await client.embeddings.create({ model: 'stories260K', input: ['hello world', 'a cat'], encoding_format: 'float' });
    for (const d of r.data) expect(Math.hypot(...d.embedding)).toBeCloseTo(1, 4);
    const ids = t.app.get(InferenceService).tokenize('hello world');
    const byIds = await post('/v1/embeddings', { input: ids, encoding_format: 'float' }).expect(200);
    byIds.body.data[0].embedding.forEach((v: number, i: number) => expect(v).toBeCloseTo(r.data[0].embedding[i], 4));
    await post('/v1/embeddings', { input: 'x', dimensions: 64 }).expect(200);
    const bad = await post('/v1/embeddings', { input: 'x', dimensions: 32 }).expect(400);
    expect(bad.body.error).toMatchObject({ code: 'unsupported_parameter', param: 'dimensions' });
  });

  it.each<[string, string, object]>([
    ['suffix', '/v1/completions', { prompt: 'x', suffix: 'y' }],
    ['best_of', '/v1/completions', { prompt: 'x', best_of: 3 }],
    ['echo', '/v1/completions', { prompt: 'x', echo: true, logprobs: 1 }],
    ['audio', '/v1/chat/completions', { messages: user, audio: { voice: 'alloy', format: 'wav' } }],
    ['modalities', '/v1/chat/completions', { messages: user, modalities: ['text', 'audio'] }],
    ['web_search_options', '/v1/chat/completions', { messages: user, web_search_options: {} }],
    ['reasoning_effort', '/v1/chat/completions', { messages: user, reasoning_effort: 'high' }],
    ['verbosity', '/v1/chat/completions', { messages: user, verbosity: 'low' }],
    ['frobnicate', '/v1/chat/completions', { messages: user, frobnicate: true }],
    ['response_format', '/v1/chat/completions', { messages: user, response_format: { type: 'json_object' }, tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: 'required' }],
    ['ignore_eos', '/v1/chat/completions', { messages: user, response_format: { type: 'json_object' }, ignore_eos: true }],
    ['dimensions', '/v1/embeddings', { input: 'x', dimensions: 3 }],
    ['encodings', '/v1/embeddings', { input: 'x', encodings: 'x' }],
  ])('%s is refused with a 400 unsupported_parameter that names it', async (field, path, body) => {
    const r = await post(path, body).expect(400);
    expect(r.body.error).toMatchObject({ type: 'invalid_request_error', code: 'unsupported_parameter', param: field });
    expect(r.body.error.message).toContain(field);
  });

  it('accepted-but-inert fields are accepted', async () => {
    await post('/v1/chat/completions', {
      messages: user,
      max_tokens: 2,
      user: 'u1',
      metadata: { a: 'b' },
      store: false,
      service_tier: 'auto',
      prompt_cache_key: 'k',
      safety_identifier: 's',
      prediction: { type: 'content', content: 'x' },
      modalities: ['text'],
      stream_options: undefined,
    }).expect(200);
  });
});
