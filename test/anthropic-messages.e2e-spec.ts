import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import { BUNDLED_MODEL } from '@app/common';
import { InferenceService, synthesizeModel } from '@app/inference';
import { openStream, post, waitFor } from './support/http';
import { metric, scrape } from './support/metrics';
import { startTestApp, TestApp } from './support/test-app';

const MODEL = 'stories260K';
const WEATHER = {
  name: 'get_weather',
  description: 'Current weather in a city',
  input_schema: { type: 'object' as const, properties: { city: { type: 'string', enum: ['Paris', 'Oslo', 'Lima'] }, days: { type: 'integer' } }, required: ['city', 'days'], additionalProperties: false },
};
/**
 * Sampling parameters the SDK's types (1.14) no longer list but the API and this server accept:
 * sent through the unmodified client like any other body field.
 */
const greedy = { temperature: 0 } as object;

function checkWeather(input: unknown): void {
  const v = input as { city: string; days: number };
  expect(['Paris', 'Oslo', 'Lima']).toContain(v.city);
  expect(Number.isInteger(v.days)).toBe(true);
}

/** Anthropic's error shape, and nothing of the OpenAI envelope. */
function expectAnthropicError(body: any, type: string): void {
  expect(body).toMatchObject({ type: 'error', error: { type, message: expect.any(String) } });
  expect(body.error.code).toBeUndefined();
}

describe('Anthropic Messages API (bundled model)', () => {
  let t: TestApp;
  let client: Anthropic;
  beforeAll(async () => {
    t = await startTestApp({ CONTEXT_SIZE: '1024' });
    client = new Anthropic({ baseURL: t.url, apiKey: t.key, maxRetries: 0 });
  });
  afterAll(() => t?.close());

  it('messages.create: a message with a text block, stop_reason and usage; count_tokens counts the same prompt', async () => {
    const params = { model: MODEL, max_tokens: 8, system: 'You tell stories.', messages: [{ role: 'user' as const, content: 'Once upon a time' }], ...greedy };
    const m = await client.messages.create(params);
    expect(m).toMatchObject({ type: 'message', role: 'assistant', model: MODEL, stop_sequence: null });
    expect(m.id).toMatch(/^msg_/);
    expect(m.content[0]).toMatchObject({ type: 'text', text: expect.any(String) });
    expect(['end_turn', 'max_tokens']).toContain(m.stop_reason);
    expect(m.usage.output_tokens).toBeGreaterThan(0);
    const prompt = m.usage.input_tokens + (m.usage.cache_read_input_tokens ?? 0);
    const counted = await client.messages.countTokens({ model: MODEL, system: 'You tell stories.', messages: [{ role: 'user', content: 'Once upon a time' }] });
    expect(counted.input_tokens).toBe(prompt);
    // Blocks and the system as blocks render the same prompt.
    const blocks = await client.messages.countTokens({ model: MODEL, system: [{ type: 'text', text: 'You tell stories.' }], messages: [{ role: 'user', content: [{ type: 'text', text: 'Once upon a time' }] }] });
    expect(blocks.input_tokens).toBe(prompt);
  });

  it('stop_sequences: the one that stopped the answer is stop_sequence, and it is not in the text', async () => {
    const free = await client.messages.create({ model: MODEL, max_tokens: 30, messages: [{ role: 'user', content: 'Tell me a story' }], ...greedy });
    const text = (free.content[0] as Anthropic.TextBlock).text;
    const stop = text.slice(4, 6);
    expect(stop.length).toBe(2);
    const m = await client.messages.create({ model: MODEL, max_tokens: 30, stop_sequences: ['zzzz', stop], messages: [{ role: 'user', content: 'Tell me a story' }], ...greedy });
    expect(m.stop_reason).toBe('stop_sequence');
    expect(m.stop_sequence).toBe(stop);
    expect((m.content[0] as Anthropic.TextBlock).text).toBe(text.slice(0, text.indexOf(stop)));
    // Served again from the exact cache (the same generation flow as every route): the stop sequence is remembered.
    const { data: again, response } = await client.messages.create({ model: MODEL, max_tokens: 30, stop_sequences: ['zzzz', stop], messages: [{ role: 'user', content: 'Tell me a story' }], ...greedy }).withResponse();
    expect(response.headers.get('x-cache')).toBe('HIT');
    expect(again).toMatchObject({ stop_reason: 'stop_sequence', stop_sequence: stop, content: m.content });
  });

  it('messages.stream: Anthropic\'s event sequence; the final message is the deltas put together', async () => {
    const stream = client.messages.stream({ model: MODEL, max_tokens: 10, messages: [{ role: 'user', content: 'The cat' }] });
    const types: string[] = [];
    let text = '';
    stream.on('streamEvent', (e) => types.push(e.type));
    stream.on('text', (delta) => (text += delta));
    const final = await stream.finalMessage();
    expect(types[0]).toBe('message_start');
    expect(types.slice(-2)).toEqual(['message_delta', 'message_stop']);
    expect(types).toContain('content_block_start');
    expect(types).toContain('content_block_stop');
    expect((final.content[0] as Anthropic.TextBlock).text).toBe(text);
    expect(final.usage.output_tokens).toBeGreaterThan(0);
    expect(final.usage.input_tokens + (final.usage.cache_read_input_tokens ?? 0)).toBeGreaterThan(0);
    // Raw wire: every event is named, with a ping after message_start.
    const raw = await post(t.url, '/v1/messages', t.key, { model: MODEL, max_tokens: 4, messages: [{ role: 'user', content: 'Hi' }], stream: true }, { 'anthropic-version': '2023-06-01' });
    const names = [...(raw.body as string).matchAll(/^event: (.*)$/gm)].map((m) => m[1]);
    expect(names.slice(0, 2)).toEqual(['message_start', 'ping']);
    expect(names.at(-1)).toBe('message_stop');
  });

  it('tool use on the generic format: tool_choice any gives tool_use blocks matching the schema, stop_reason tool_use', async () => {
    const m = await client.messages.create({ model: MODEL, max_tokens: 200, tools: [WEATHER], tool_choice: { type: 'any', disable_parallel_tool_use: true }, messages: [{ role: 'user', content: 'Weather in Lima?' }], ...greedy });
    expect(m.stop_reason).toBe('tool_use');
    const uses = m.content.filter((b) => b.type === 'tool_use') as Anthropic.ToolUseBlock[];
    expect(uses).toHaveLength(1);
    expect(uses[0].id).toMatch(/^toolu_/);
    checkWeather(uses[0].input);
  });

  it('bad input on each route gets Anthropic\'s error shape and a 4xx', async () => {
    const cases: [string, object, number, string][] = [
      ['/v1/messages', { model: MODEL, messages: [{ role: 'user', content: 'x' }] }, 400, 'invalid_request_error'],
      ['/v1/messages', { model: MODEL, max_tokens: 5, messages: [] }, 400, 'invalid_request_error'],
      ['/v1/messages', { model: MODEL, max_tokens: 5, messages: [{ role: 'robot', content: 'x' }] }, 400, 'invalid_request_error'],
      ['/v1/messages', { model: MODEL, max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'image', source: {} }] }] }, 400, 'invalid_request_error'],
      ['/v1/messages', { model: MODEL, max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_x', content: 'r' }] }] }, 400, 'invalid_request_error'],
      ['/v1/messages', { model: MODEL, max_tokens: 5, messages: [{ role: 'user', content: 'x' }], thinking: { type: 'enabled', budget_tokens: 1024 } }, 400, 'invalid_request_error'],
      ['/v1/messages', { model: MODEL, max_tokens: 5, messages: [{ role: 'user', content: 'x' }], frobnicate: true }, 400, 'invalid_request_error'],
      ['/v1/messages', { model: MODEL, max_tokens: 5, messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'web_search_20250305', name: 'web_search' }] }, 400, 'invalid_request_error'],
      ['/v1/messages', { model: MODEL, max_tokens: 100000, messages: [{ role: 'user', content: 'x' }] }, 400, 'invalid_request_error'],
      ['/v1/messages', { model: 'claude-opus-4', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }, 404, 'not_found_error'],
      ['/v1/messages/count_tokens', { model: MODEL, messages: 'x' }, 400, 'invalid_request_error'],
      ['/v1/messages/count_tokens', { model: 'nope', messages: [{ role: 'user', content: 'x' }] }, 404, 'not_found_error'],
    ];
    for (const [path, body, status, type] of cases) {
      const r = await post(t.url, path, t.key, body, { 'anthropic-version': '2023-06-01' });
      expect({ path, body, status: r.status }).toEqual({ path, body, status });
      expectAnthropicError(r.body, type);
    }
    const noKey = await post(t.url, '/v1/messages', undefined, { model: MODEL, max_tokens: 5, messages: [] });
    expect(noKey.status).toBe(401);
    expectAnthropicError(noKey.body, 'authentication_error');
    const malformed = await fetch(`${t.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': t.key, 'content-type': 'application/json' }, body: '{"model":' });
    expect(malformed.status).toBe(400);
    expectAnthropicError(await malformed.json(), 'invalid_request_error');
    const wrongType = await fetch(`${t.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': t.key, 'content-type': 'text/plain' }, body: 'hello' });
    expect(wrongType.status).toBe(415);
    expectAnthropicError(await wrongType.json(), 'invalid_request_error');
    // The SDK maps them to its error classes and reads the message.
    await expect(client.messages.create({ model: 'nope', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] })).rejects.toBeInstanceOf(Anthropic.NotFoundError);
    await expect(client.messages.create({ model: MODEL, max_tokens: 0, messages: [{ role: 'user', content: 'x' }] })).rejects.toMatchObject({ status: 400, error: { type: 'error', error: { type: 'invalid_request_error' } } });
    // Other routes keep the OpenAI envelope.
    const openai = await post(t.url, '/v1/chat/completions', t.key, { messages: [] });
    expect(openai.body.error.code).toBe('validation_error');
  });

  it('an abandoned stream frees its slot; usage is in the ledger under the route', async () => {
    const s = await openStream(t.url, '/v1/messages', t.key, { model: MODEL, max_tokens: 400, messages: [{ role: 'user', content: 'A long story' }], stream: true });
    expect(s.status).toBe(200);
    s.drop();
    const inference = t.app.get(InferenceService);
    await waitFor(() => inference.scheduler.busySlots === 0, 10_000);
    const m = await scrape(t.url);
    expect(metric(m, 'llm_slots_busy')).toBe(0);
    expect(metric(m, 'llm_requests_total', { endpoint: '/v1/messages' })).toBeGreaterThan(0);
    const report = await fetch(`${t.url}/admin/usage?group_by=route`, { headers: { Authorization: `Bearer ${t.key}` } });
    const rows = ((await report.json()) as { data: { route: string; requests: number; prompt_tokens: number }[] }).data;
    expect(rows.find((r) => r.route === '/v1/messages')).toMatchObject({ requests: expect.any(Number), prompt_tokens: expect.any(Number) });
    expect(rows.find((r) => r.route === '/v1/messages')!.prompt_tokens).toBeGreaterThan(0);
  });
});

/** A tiny model with Qwen 2.5's real chat template: tool calls in its own syntax, results in its format. */
describe('Anthropic tool use round trip (Qwen 2.5 chat template)', () => {
  let t: TestApp;
  let client: Anthropic;
  beforeAll(async () => {
    const modelPath = join(mkdtempSync(join(tmpdir(), 'llm-anthropic-')), 'qwen.gguf');
    synthesizeModel(modelPath, { dim: 64, layers: 2, heads: 4, kvHeads: 4, ffn: 128, vocab: 544, context: 2048, type: 0 as never }, BUNDLED_MODEL, 1, undefined, 'qwen2.5');
    t = await startTestApp({ MODEL_PATH: modelPath, CONTEXT_SIZE: '2048', CACHE_ENABLED: 'false' });
    client = new Anthropic({ baseURL: t.url, apiKey: t.key, maxRetries: 0 });
  });
  afterAll(() => t?.close());

  it('create and stream a forced tool_use, send back tool_result, get an answer; the result is in the prompt', async () => {
    const ask: Anthropic.MessageParam[] = [{ role: 'user', content: 'What is the weather in Paris?' }];
    const first = await client.messages.create({ model: 'qwen', max_tokens: 200, tools: [WEATHER], tool_choice: { type: 'tool', name: 'get_weather' }, messages: ask, ...greedy });
    expect(first.stop_reason).toBe('tool_use');
    const use = first.content.find((b) => b.type === 'tool_use') as Anthropic.ToolUseBlock;
    expect(use.name).toBe('get_weather');
    checkWeather(use.input);

    // Streamed: input_json_delta events the SDK assembles into the same input.
    const stream = client.messages.stream({ model: 'qwen', max_tokens: 200, tools: [WEATHER], tool_choice: { type: 'tool', name: 'get_weather' }, messages: ask, ...greedy });
    let partial = '';
    stream.on('inputJson', (delta) => (partial += delta));
    const streamed = await stream.finalMessage();
    const streamedUse = streamed.content.find((b) => b.type === 'tool_use') as Anthropic.ToolUseBlock;
    expect(streamedUse.input).toEqual(use.input);
    expect(JSON.parse(partial)).toEqual(use.input);
    expect(streamed.stop_reason).toBe('tool_use');

    const messages: Anthropic.MessageParam[] = [
      ...ask,
      { role: 'assistant', content: first.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '{"temp": 21}' }, { type: 'text', text: 'Thanks!' }] },
    ];
    const answer = await client.messages.create({ model: 'qwen', max_tokens: 8, tools: [WEATHER], messages, ...greedy });
    expect(answer.role).toBe('assistant');
    const counted = await client.messages.countTokens({ model: 'qwen', tools: [WEATHER], messages });
    expect(counted.input_tokens).toBe(answer.usage.input_tokens + (answer.usage.cache_read_input_tokens ?? 0));
    expect(counted.input_tokens).toBeGreaterThan(first.usage.input_tokens + (first.usage.cache_read_input_tokens ?? 0));
    // The tool result sits in Qwen's <tool_response> block of the rendered prompt.
    const inference = t.app.get(InferenceService);
    const tokens = inference.prepareChat(
      [
        { role: 'user', content: 'What is the weather in Paris?' },
        { role: 'assistant', content: '', toolCalls: [{ id: use.id, name: 'get_weather', arguments: JSON.stringify(use.input) }] },
        { role: 'tool', content: '{"temp": 21}', toolCallId: use.id },
      ],
      1,
    ).tokens;
    expect(inference.detokenize(tokens, { special: true })).toMatch(/<tool_response>\s*\{"temp": 21\}\s*<\/tool_response>/);
  });
});
