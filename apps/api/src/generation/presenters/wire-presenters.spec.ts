import type { RenderedError } from '@app/common';
import { ErrorType } from '@app/common';
import type { GenerationResult, GenerationStreamEvent, SseFrame } from '../generation.types';
import { AnthropicPresenter, anthropicErrorType } from './anthropic.presenter';
import { ResponseEcho, ResponsesPresenter } from './responses.presenter';
import { ChatPresenter } from './chat.presenter';
import { CompletionsPresenter } from './completions.presenter';

const usage = { promptTokens: 10, completionTokens: 5, cachedPromptTokens: 4 };
/** Text, whitespace, a call with streamed arguments, then the end. */
const EVENTS: GenerationStreamEvent[] = [
  { type: 'text', choice: 0, text: 'Let me ' },
  { type: 'text', choice: 0, text: 'check.' },
  { type: 'text', choice: 0, text: ' \n' },
  { type: 'tool-call', choice: 0, index: 0, id: 'call_abc', name: 'get_weather' },
  { type: 'tool-arguments', choice: 0, index: 0, delta: '{"city": ' },
  { type: 'tool-arguments', choice: 0, index: 0, delta: '"Oslo"}' },
  { type: 'choice-end', choice: 0, finishReason: 'tool_calls', usage },
];
const ECHO: ResponseEcho = {
  id: 'resp_0123456789abcdef0123456789abcdef',
  created_at: 1,
  model: 'm',
  instructions: null,
  max_output_tokens: null,
  metadata: {},
  parallel_tool_calls: true,
  previous_response_id: null,
  store: true,
  temperature: 1,
  text: { format: { type: 'text' } },
  tool_choice: 'auto',
  tools: [],
  top_logprobs: 0,
  top_p: 1,
  truncation: 'disabled',
  user: null,
};
const stream = (p: { streamEvent(e: GenerationStreamEvent): readonly SseFrame[]; streamEnd(s: { usage: typeof usage }): readonly SseFrame[] }, events = EVENTS): SseFrame[] => [
  ...events.flatMap((e) => p.streamEvent(e)),
  ...p.streamEnd({ usage }),
];
const data = (f: SseFrame): any => f.data;

describe('Responses presenter', () => {
  it('streams the Responses event sequence: a message item, then a function_call item', () => {
    const p = new ResponsesPresenter(ECHO, {});
    const frames = stream(p);
    expect(frames.map((f) => f.event)).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.delta',
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.output_item.added',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(frames.every((f, i) => data(f).type === f.event && data(f).sequence_number === i)).toBe(true);
    expect(data(frames[7]).text).toBe('Let me check. \n');
    expect(data(frames[13])).toMatchObject({ name: 'get_weather', arguments: '{"city": "Oslo"}', output_index: 1 });
    const final = data(frames.at(-1)!).response;
    expect(final).toMatchObject({ status: 'completed', usage: { input_tokens: 10, output_tokens: 5, total_tokens: 15, input_tokens_details: { cached_tokens: 4 } } });
    expect(final.output).toEqual([
      { type: 'message', id: 'msg_0123456789abcdef0123456789abcdef_0', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: 'Let me check. \n', annotations: [], logprobs: [] }] },
      { type: 'function_call', id: 'fc_0123456789abcdef0123456789abcdef_1', call_id: 'call_abc', name: 'get_weather', arguments: '{"city": "Oslo"}', status: 'completed' },
    ]);
    expect(p.response).toBe(final);
  });

  it('max_output_tokens: response.incomplete and an incomplete message; an empty answer is still one message', () => {
    const cut = stream(new ResponsesPresenter(ECHO, {}), [{ type: 'text', choice: 0, text: 'Once' }, { type: 'choice-end', choice: 0, finishReason: 'length', usage }]);
    expect(cut.at(-1)!.event).toBe('response.incomplete');
    expect(data(cut.at(-1)!).response).toMatchObject({ status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' }, output: [{ status: 'incomplete' }] });
    const empty = stream(new ResponsesPresenter(ECHO, {}), [{ type: 'choice-end', choice: 0, finishReason: 'stop', usage }]);
    expect(data(empty.at(-1)!).response.output).toEqual([expect.objectContaining({ type: 'message', content: [expect.objectContaining({ text: '' })] })]);
  });

  it('whitespace alone before a call makes no message (stream and body); an error after the start is an `error` event', () => {
    const calls: GenerationStreamEvent[] = [{ type: 'text', choice: 0, text: ' \n' }, ...EVENTS.slice(3)];
    const frames = stream(new ResponsesPresenter(ECHO, {}), calls);
    expect(data(frames.at(-1)!).response.output.map((o: { type: string }) => o.type)).toEqual(['function_call']);
    const result: GenerationResult = { choices: [{ index: 0, text: ' ', toolCalls: [{ id: 'call_1', name: 'f', arguments: '{}' }], finishReason: 'tool_calls', usage }], usage };
    const body = new ResponsesPresenter(ECHO, {}).body(result) as any;
    expect(body.output.map((o: { type: string }) => o.type)).toEqual(['function_call']);
    // Cut by max_output_tokens: the last call is incomplete.
    const cut = new ResponsesPresenter(ECHO, {}).body({ ...result, choices: [{ ...result.choices[0], toolCalls: [{ id: 'call_1', name: 'f', arguments: '{}' }, { id: 'call_2', name: 'f', arguments: '{"a' }], finishReason: 'length' }] }) as any;
    expect(cut).toMatchObject({ status: 'incomplete', output: [{ status: 'completed' }, { status: 'incomplete', arguments: '{"a' }] });
    const rendered: RenderedError = { status: 503, headers: {}, body: { error: { message: 'busy', type: ErrorType.Unavailable, code: 'queue_timeout' } } };
    const p = new ResponsesPresenter(ECHO, {});
    p.streamEvent(EVENTS[0]);
    expect(p.streamError(rendered)).toEqual({ event: 'error', data: { type: 'error', code: 'queue_timeout', message: 'busy', param: null, sequence_number: 5 } });
  });
});

describe('Anthropic presenter', () => {
  const options = { id: 'msg_1', model: 'm', stopSequences: ['END'] };

  it('streams message_start, ping, a text block, a tool_use block with input_json_delta, message_delta and message_stop', () => {
    const p = new AnthropicPresenter(options);
    p.promptTokens = 10;
    const frames = stream(p);
    expect(frames.map((f) => f.event)).toEqual([
      'message_start',
      'ping',
      'content_block_start',
      'content_block_delta',
      'content_block_delta',
      'content_block_delta',
      'content_block_stop',
      'content_block_start',
      'content_block_delta',
      'content_block_delta',
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
    expect(data(frames[0]).message.usage.input_tokens).toBe(10);
    // Whitespace alone before a call opens no text block.
    const p2 = new AnthropicPresenter(options);
    const only = stream(p2, [{ type: 'text', choice: 0, text: ' ' }, ...EVENTS.slice(3)]);
    expect(only.filter((f) => f.event === 'content_block_start').map((f) => data(f).content_block.type)).toEqual(['tool_use']);
    expect(data(frames[7]).content_block).toEqual({ type: 'tool_use', id: 'toolu_abc', name: 'get_weather', input: {} });
    expect(data(frames[8]).delta).toEqual({ type: 'input_json_delta', partial_json: '{"city": ' });
    expect(data(frames[11])).toEqual({ type: 'message_delta', delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: 5, input_tokens: 6, cache_read_input_tokens: 4 } });
  });

  it('stop_reason: a request stop sequence is stop_sequence, a template stop string end_turn, a cut max_tokens', () => {
    const body = (finishReason: 'stop' | 'length', stopSequence?: string): any =>
      new AnthropicPresenter(options).body({ choices: [{ index: 0, text: 'Hi', toolCalls: [], finishReason, stopSequence, usage }], usage });
    expect(body('stop', 'END')).toMatchObject({ stop_reason: 'stop_sequence', stop_sequence: 'END', content: [{ type: 'text', text: 'Hi' }] });
    expect(body('stop', '\nUser:')).toMatchObject({ stop_reason: 'end_turn', stop_sequence: null });
    expect(body('length')).toMatchObject({ stop_reason: 'max_tokens', usage: { input_tokens: 6, cache_read_input_tokens: 4, output_tokens: 5 } });
    const calls = new AnthropicPresenter(options).body({ choices: [{ index: 0, text: '', toolCalls: [{ id: 'call_9', name: 'f', arguments: '{"a":1}' }, { id: 'call_8', name: 'f', arguments: '{"a":' }], finishReason: 'length', usage }], usage }) as any;
    expect(calls.content).toEqual([
      { type: 'tool_use', id: 'toolu_9', name: 'f', input: { a: 1 } },
      { type: 'tool_use', id: 'toolu_8', name: 'f', input: '{"a":' },
    ]);
  });

  it('maps HTTP statuses to Anthropic error types', () => {
    expect([400, 401, 403, 404, 408, 413, 415, 429, 500, 503].map(anthropicErrorType)).toEqual([
      'invalid_request_error',
      'authentication_error',
      'permission_error',
      'not_found_error',
      'timeout_error',
      'request_too_large',
      'invalid_request_error',
      'rate_limit_error',
      'api_error',
      'overloaded_error',
    ]);
  });
});

describe('OpenAI presenters: streamed text chunks', () => {
  const meta = { id: 'cmpl-1', created: 1700000000, model: 'm' };
  const text = 'a "quoted"\ntoken \u00e9\u2028';

  it('completions: the chunk of a token is the JSON the object form serialises to, byte for byte', () => {
    for (const includeUsage of [false, true]) {
      const p = new CompletionsPresenter(meta, { includeUsage });
      const [frame] = p.streamEvent({ type: 'text', choice: 2, text });
      const expected = { ...meta, object: 'text_completion', choices: [{ index: 2, text, logprobs: null, finish_reason: null }], ...(includeUsage ? { usage: null } : {}) };
      expect(frame.json).toBe(JSON.stringify(expected));
      expect(frame.data).toEqual(expected);
    }
  });

  it('completions: chunks with logprobs keep the object form, with their text offsets', () => {
    const p = new CompletionsPresenter(meta, { includeUsage: false, logprobs: 0 });
    p.streamEvent({ type: 'text', choice: 0, text: 'ab', logprobs: [{ token: 1, text: 'ab', bytes: [97, 98], logprob: -1, top: [] }] });
    const [frame] = p.streamEvent({ type: 'text', choice: 0, text: 'c', logprobs: [{ token: 2, text: 'c', bytes: [99], logprob: -2, top: [] }] });
    expect(frame.json).toBeUndefined();
    expect(data(frame).choices[0].logprobs.text_offset).toEqual([2]);
  });

  it('chat: the first chunk carries the role, later ones are the JSON the object form serialises to', () => {
    for (const includeUsage of [false, true]) {
      const p = new ChatPresenter(meta, { includeUsage, legacyFunctions: false });
      const [first] = p.streamEvent({ type: 'text', choice: 0, text: 'Hi' });
      expect(data(first).choices[0].delta).toEqual({ role: 'assistant', content: 'Hi' });
      const [later] = p.streamEvent({ type: 'text', choice: 0, text });
      const expected = {
        ...meta,
        object: 'chat.completion.chunk',
        system_fingerprint: null,
        choices: [{ index: 0, delta: { content: text }, logprobs: null, finish_reason: null }],
        ...(includeUsage ? { usage: null } : {}),
      };
      expect(later.json).toBe(JSON.stringify(expected));
      expect(later.data).toEqual(expected);
    }
  });

  it('chat: chunks with logprobs keep the object form', () => {
    const p = new ChatPresenter(meta, { includeUsage: false, legacyFunctions: false, topLogprobs: 0 });
    p.streamEvent({ type: 'text', choice: 0, text: 'Hi' });
    const [later] = p.streamEvent({ type: 'text', choice: 0, text: 'x', logprobs: [{ token: 1, text: 'x', bytes: [120], logprob: -0.5, top: [] }] });
    expect(later.json).toBeUndefined();
    expect(data(later).choices[0].logprobs.content[0]).toMatchObject({ token: 'x', logprob: -0.5 });
  });
});
