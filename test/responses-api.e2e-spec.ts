import { randomBytes } from 'node:crypto';
import OpenAI from 'openai';
import { Client } from 'pg';
import { z } from 'zod';
import { generateText, stepCountIs, streamText, tool } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { InferenceService } from '@app/inference';
import { openStream, post, sleep, waitFor } from './support/http';
import { metric, scrape } from './support/metrics';
import { startTestApp, TEST_KEY, TestApp } from './support/test-app';

const OTHER_KEY = 'sk-other-key-9876543210';
const MODEL = 'stories260K';
const WEATHER = {
  type: 'function' as const,
  name: 'get_weather',
  description: 'Current weather in a city',
  parameters: { type: 'object', properties: { city: { type: 'string', enum: ['Paris', 'Oslo'] }, days: { type: 'integer' } }, required: ['city', 'days'], additionalProperties: false },
  strict: true,
};

/** Reads an SSE body into `{event, data}` pairs. */
function events(body: string): { event: string; data: any }[] {
  return body
    .split('\n\n')
    .filter((b) => b.trim())
    .map((block) => {
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? '';
      const data = /^data: (.*)$/m.exec(block)?.[1] ?? '';
      return { event, data: JSON.parse(data) };
    });
}

describe('OpenAI Responses API (bundled model)', () => {
  let t: TestApp;
  let client: OpenAI;
  beforeAll(async () => {
    t = await startTestApp({ API_KEYS: `${TEST_KEY},${OTHER_KEY}`, CONTEXT_SIZE: '1024' });
    client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: t.key, maxRetries: 0 });
  });
  afterAll(() => t?.close());

  it('openai responses.create: a response object with a message item, usage in its shape, stored', async () => {
    const r = await client.responses.create({ model: MODEL, input: 'Once upon a time', instructions: 'Tell a story.', max_output_tokens: 12, temperature: 0 });
    expect(r).toMatchObject({ object: 'response', model: MODEL, instructions: 'Tell a story.', max_output_tokens: 12, store: true, previous_response_id: null });
    expect(r.id).toMatch(/^resp_[0-9a-f]{32}$/);
    expect(['completed', 'incomplete']).toContain(r.status);
    expect(r.output).toHaveLength(1);
    expect(r.output[0]).toMatchObject({ type: 'message', role: 'assistant', id: expect.stringMatching(/^msg_/) });
    expect(r.output_text.length).toBeGreaterThan(0);
    expect(r.usage).toMatchObject({ input_tokens: expect.any(Number), output_tokens: expect.any(Number), input_tokens_details: { cached_tokens: expect.any(Number) }, output_tokens_details: { reasoning_tokens: 0 } });
    expect(r.usage!.total_tokens).toBe(r.usage!.input_tokens + r.usage!.output_tokens);
    if (r.status === 'incomplete') expect(r.incomplete_details).toEqual({ reason: 'max_output_tokens' });
    // The stored response is the same object.
    const again = await client.responses.retrieve(r.id);
    expect(again).toMatchObject({ id: r.id, output: r.output, usage: r.usage });
    // The same request again is answered by the exact cache, as a new response.
    const { data: cached, response } = await client.responses.create({ model: MODEL, input: 'Once upon a time', instructions: 'Tell a story.', max_output_tokens: 12, temperature: 0 }).withResponse();
    expect(response.headers.get('x-cache')).toBe('HIT');
    expect(cached.id).not.toBe(r.id);
    expect(cached.output_text).toBe(r.output_text);
  });

  it('streaming: the Responses event sequence, deltas that add up to the final text, increasing sequence numbers', async () => {
    const res = await post(t.url, '/v1/responses', t.key, { model: MODEL, input: 'The dog', max_output_tokens: 10, temperature: 0.8, stream: true });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const ev = events(res.body as string);
    expect(ev.every((e) => e.event === e.data.type)).toBe(true);
    expect(ev.map((e) => e.data.sequence_number)).toEqual(ev.map((_, i) => i));
    const types = ev.map((e) => e.event);
    expect(types.slice(0, 4)).toEqual(['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
    expect(types.slice(-4, -1)).toEqual(['response.output_text.done', 'response.content_part.done', 'response.output_item.done']);
    expect(['response.completed', 'response.incomplete']).toContain(types.at(-1));
    const text = ev.filter((e) => e.event === 'response.output_text.delta').map((e) => e.data.delta).join('');
    const final = ev.at(-1)!.data.response;
    expect(final.output[0].content[0].text).toBe(text);
    expect(ev.find((e) => e.event === 'response.output_text.done')!.data.text).toBe(text);
    expect(final.usage.output_tokens).toBeGreaterThan(0);
    // Stored before response.completed reached the client.
    expect((await client.responses.retrieve(final.id)).output).toEqual(final.output);
    // The openai SDK's stream helper accumulates the same events into the final response.
    const stream = client.responses.stream({ model: MODEL, input: 'The dog', max_output_tokens: 10 });
    let deltas = '';
    stream.on('response.output_text.delta', (e) => (deltas += e.delta));
    const done = await stream.finalResponse();
    expect(done.output_text).toBe(deltas);
  });

  it('function tools: a forced call is a function_call item whose arguments match the schema; streamed argument deltas reassemble it; the result goes back with previous_response_id', async () => {
    const body = { model: MODEL, input: 'Weather in Paris?', tools: [WEATHER], tool_choice: 'required' as const, parallel_tool_calls: false, temperature: 0, max_output_tokens: 200 };
    const r = await client.responses.create(body);
    const calls = r.output.filter((o) => o.type === 'function_call');
    expect(calls).toHaveLength(1);
    const call = calls[0] as OpenAI.Responses.ResponseFunctionToolCall;
    expect(call).toMatchObject({ name: 'get_weather', call_id: expect.stringMatching(/^call_/), id: expect.stringMatching(/^fc_/), status: 'completed' });
    const args = JSON.parse(call.arguments);
    expect(['Paris', 'Oslo']).toContain(args.city);
    expect(Number.isInteger(args.days)).toBe(true);

    const stream = await client.responses.create({ ...body, stream: true });
    const seen: string[] = [];
    let deltas = '';
    let doneArgs = '';
    for await (const e of stream) {
      seen.push(e.type);
      if (e.type === 'response.function_call_arguments.delta') deltas += e.delta;
      if (e.type === 'response.function_call_arguments.done') doneArgs = e.arguments;
    }
    expect(seen).toContain('response.output_item.added');
    expect(deltas.trim()).toBe(doneArgs);
    expect(JSON.parse(doneArgs)).toEqual(args);

    // Round trip: the call's output continues the stored conversation.
    const next = await client.responses.create({ model: MODEL, previous_response_id: r.id, input: [{ type: 'function_call_output', call_id: call.call_id, output: '{"temp": 21}' }], tools: [WEATHER], max_output_tokens: 8 });
    expect(next.previous_response_id).toBe(r.id);
    expect(next.usage!.input_tokens).toBeGreaterThan(r.usage!.input_tokens);
    // A result for a call nobody made is a 400 naming it.
    await expect(client.responses.create({ model: MODEL, input: [{ type: 'function_call_output', call_id: 'call_nope', output: 'x' }] })).rejects.toMatchObject({ status: 400, error: { param: 'input[0].call_id' } });
  });

  it('previous_response_id continues the conversation; input_items, GET and DELETE are the creating key\'s only', async () => {
    const first = await client.responses.create({ model: MODEL, input: 'Tom had a ball.', max_output_tokens: 6, temperature: 0 });
    const second = await client.responses.create({ model: MODEL, input: 'Then he', previous_response_id: first.id, max_output_tokens: 6, temperature: 0 });
    // The second prompt holds the first exchange: more input tokens, and its prefix came from the KV cache.
    expect(second.usage!.input_tokens).toBeGreaterThan(first.usage!.input_tokens + first.usage!.output_tokens);
    expect(second.usage!.input_tokens_details.cached_tokens).toBeGreaterThan(0);
    const items = await client.responses.inputItems.list(second.id);
    expect(items.data).toHaveLength(1);
    expect(items.data[0]).toMatchObject({ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Then he' }] });
    // An item of a stored response can be referenced instead of repeated.
    const ref = await post(t.url, '/v1/responses', t.key, { model: MODEL, input: [{ type: 'item_reference', id: first.output[0].id }, { role: 'user', content: 'More.' }], max_output_tokens: 4 });
    expect(ref.status).toBe(200);
    const refItems = await client.responses.inputItems.list(ref.body.id, { order: 'asc' });
    expect(refItems.data[0]).toMatchObject({ id: first.output[0].id, type: 'message', role: 'assistant' });

    const other = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: OTHER_KEY, maxRetries: 0 });
    await expect(other.responses.retrieve(first.id)).rejects.toMatchObject({ status: 404, error: { code: 'response_not_found' } });
    await expect(other.responses.create({ model: MODEL, input: 'x', previous_response_id: first.id })).rejects.toMatchObject({ status: 404, error: { code: 'previous_response_not_found', param: 'previous_response_id' } });
    const stolen = await post(t.url, '/v1/responses', OTHER_KEY, { model: MODEL, input: [{ type: 'item_reference', id: first.output[0].id }] });
    expect(stolen.status).toBe(404);
    await expect(other.responses.delete(first.id)).rejects.toMatchObject({ status: 404 });

    await client.responses.delete(first.id);
    await expect(client.responses.retrieve(first.id)).rejects.toMatchObject({ status: 404 });
    // store: false keeps nothing.
    const unstored = await client.responses.create({ model: MODEL, input: 'x', store: false, max_output_tokens: 2 });
    expect((unstored as unknown as { store: boolean }).store).toBe(false);
    await expect(client.responses.retrieve(unstored.id)).rejects.toMatchObject({ status: 404 });
  });

  it('text.format json_schema: the output is JSON matching the schema; logprobs with include', async () => {
    const r = await client.responses.create({
      model: MODEL,
      input: 'An animal?',
      text: { format: { type: 'json_schema', name: 'animal', schema: { type: 'object', properties: { kind: { enum: ['cat', 'dog'] }, legs: { type: 'integer' } }, required: ['kind', 'legs'], additionalProperties: false }, strict: true } },
      temperature: 0,
      max_output_tokens: 100,
    });
    expect(r.status).toBe('completed');
    const value = JSON.parse(r.output_text);
    expect(['cat', 'dog']).toContain(value.kind);
    expect(Number.isInteger(value.legs)).toBe(true);
    const lp = await client.responses.create({ model: MODEL, input: 'Once', include: ['message.output_text.logprobs'], top_logprobs: 2, max_output_tokens: 4 });
    const part = (lp.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText;
    expect(part.logprobs!.length).toBeGreaterThan(0);
    expect(part.logprobs!.map((l) => l.token).join('')).toBe(part.text);
    expect(part.logprobs![0].top_logprobs).toHaveLength(2);
  });

  it("the AI SDK's default OpenAI provider (Responses API): generateText, streamText, a tool loop", async () => {
    const openai = createOpenAI({ baseURL: `${t.url}/v1`, apiKey: t.key });
    const g = await generateText({ model: openai(MODEL), prompt: 'Once upon a time', maxOutputTokens: 10, temperature: 0 });
    expect(g.text.length).toBeGreaterThan(0);
    expect(g.usage.inputTokens).toBeGreaterThan(0);
    expect(g.response.id).toMatch(/^resp_/);
    const s = streamText({ model: openai(MODEL), prompt: 'Once upon a time', maxOutputTokens: 10, temperature: 0 });
    let streamed = '';
    for await (const chunk of s.textStream) streamed += chunk;
    expect(streamed).toBe(await s.text);
    expect(streamed.length).toBeGreaterThan(0);
    // Two steps: a forced call, its result sent back (function_call + function_call_output items), an answer.
    const executed: unknown[] = [];
    const loop = await generateText({
      model: openai(MODEL),
      prompt: 'Weather in Oslo?',
      maxOutputTokens: 100,
      temperature: 0,
      providerOptions: { openai: { parallelToolCalls: false } },
      tools: { get_weather: tool({ description: 'Weather', inputSchema: z.object({ city: z.enum(['Paris', 'Oslo']) }), execute: async (input) => (executed.push(input), 'cold') }) },
      prepareStep: ({ stepNumber }) => (stepNumber === 0 ? { toolChoice: 'required' } : { toolChoice: 'none' }),
      stopWhen: stepCountIs(2),
    });
    expect(executed).toHaveLength(1);
    expect(['Paris', 'Oslo']).toContain((executed[0] as { city: string }).city);
    expect(loop.steps).toHaveLength(2);
    const body = loop.steps[1].request.body;
    const second = (typeof body === 'string' ? JSON.parse(body) : body) as { input: { type?: string; role?: string }[] };
    expect(second.input.map((i) => i.type ?? i.role)).toEqual(['user', 'function_call', 'function_call_output']);
    expect(loop.text.length).toBeGreaterThan(0);
  });

  it('bad input gets the OpenAI error envelope with a 4xx naming the field', async () => {
    const cases: [object, number, string, string | null][] = [
      [{ input: [] }, 400, 'validation_error', 'input'],
      [{ input: [{ role: 'robot', content: 'x' }] }, 400, 'validation_error', 'input[0].role'],
      [{ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'http://x' }] }] }, 400, 'unsupported_parameter', 'input[0].content[0]'],
      [{ input: [{ type: 'reasoning', summary: [] }] }, 400, 'unsupported_parameter', 'input[0].type'],
      [{ input: 'x', tools: [{ type: 'web_search' }] }, 400, 'validation_error', 'tools.0.type'],
      [{ input: 'x', tool_choice: { type: 'function', name: 'nope' }, tools: [WEATHER] }, 400, 'validation_error', 'tool_choice'],
      [{ input: 'x', reasoning: { effort: 'high' } }, 400, 'unsupported_parameter', 'reasoning'],
      [{ input: 'x', background: true }, 400, 'unsupported_parameter', 'background'],
      [{ input: 'x', truncation: 'auto' }, 400, 'unsupported_parameter', 'truncation'],
      [{ input: 'x', text: { verbosity: 'low' } }, 400, 'unsupported_parameter', 'text.verbosity'],
      [{ input: 'x', frobnicate: 1 }, 400, 'unsupported_parameter', 'frobnicate'],
      [{ input: 'x', model: 'gpt-9' }, 404, 'model_not_found', 'model'],
      [{ input: 'x', previous_response_id: 'resp_nope' }, 404, 'previous_response_not_found', 'previous_response_id'],
      [{ input: [{ type: 'item_reference', id: 'msg_nope' }] }, 404, 'item_not_found', 'input[0].id'],
      [{ input: 'x', max_output_tokens: 100000 }, 400, 'context_length_exceeded', 'max_tokens'],
    ];
    for (const [body, status, code, param] of cases) {
      const r = await post(t.url, '/v1/responses', t.key, body);
      expect({ body, status: r.status, code: r.body.error?.code, param: r.body.error?.param }).toEqual({ body, status, code, param });
    }
    expect((await post(t.url, '/v1/responses', undefined, { input: 'x' })).status).toBe(401);
  });

  it('a stream abandoned mid-way frees its slot; no slot or request stays busy', async () => {
    const s = await openStream(t.url, '/v1/responses', t.key, { model: MODEL, input: 'A long story', max_output_tokens: 400, stream: true });
    expect(s.status).toBe(200);
    s.drop();
    const inference = t.app.get(InferenceService);
    await waitFor(() => inference.scheduler.busySlots === 0, 10_000);
    await sleep(50);
    const m = await scrape(t.url);
    expect(metric(m, 'llm_slots_busy')).toBe(0);
    // (/metrics itself is not counted.)
    expect(metric(m, 'llm_active_requests')).toBe(0);
    expect(metric(m, 'llm_requests_total', { endpoint: '/v1/responses' })).toBeGreaterThan(0);
  });
});

describe('Responses API stored in PostgreSQL (DATABASE_URL)', () => {
  const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const schema = `responses_e2e_${randomBytes(6).toString('hex')}`;
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ DATABASE_URL: PG_URL, DATABASE_SCHEMA: schema });
  });
  afterAll(async () => {
    await t?.close();
    const c = new Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await c.end();
  });

  it('a response is stored in the key store\'s schema and continued from there', async () => {
    const client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: t.key, maxRetries: 0 });
    const r = await client.responses.create({ model: MODEL, input: 'Once upon a time', max_output_tokens: 5 });
    const c = new Client({ connectionString: PG_URL });
    await c.connect();
    const { rows } = await c.query(`SELECT id, key_id, previous_id FROM "${schema}".stored_responses`);
    await c.end();
    expect(rows).toEqual([{ id: r.id, key_id: expect.stringMatching(/^static:/), previous_id: null }]);
    const next = await client.responses.create({ model: MODEL, input: 'Next', previous_response_id: r.id, max_output_tokens: 3 });
    expect((await client.responses.retrieve(next.id)).previous_response_id).toBe(r.id);
  });
});
