import { anthropicToChatMessages } from './anthropic.messages';

describe('Anthropic messages as chat messages', () => {
  it('system (string or blocks), text blocks, tool_use as calls and tool_result as tool messages', () => {
    expect(
      anthropicToChatMessages(
        [{ text: 'Be brief.' }, { text: 'Be kind.' }],
        [
          { role: 'user', content: [{ type: 'text', text: 'Weather ' }, { type: 'text', text: 'in Paris?' }] },
          { role: 'assistant', content: [{ type: 'text', text: 'Checking.' }, { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } }] },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'text', text: '21' }] }, { type: 'text', text: 'And Oslo?' }] },
          { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_2', name: 'get_weather', input: {} }] },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_2', content: 'timeout', is_error: true }] },
        ],
      ),
    ).toEqual([
      { role: 'system', content: 'Be brief.\nBe kind.' },
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: 'Checking.', toolCalls: [{ id: 'toolu_1', name: 'get_weather', arguments: '{"city":"Paris"}' }] },
      { role: 'tool', content: '21', toolCallId: 'toolu_1' },
      { role: 'user', content: 'And Oslo?' },
      { role: 'assistant', content: '', toolCalls: [{ id: 'toolu_2', name: 'get_weather', arguments: '{}' }] },
      { role: 'tool', content: 'Error: timeout', toolCallId: 'toolu_2' },
    ]);
    expect(anthropicToChatMessages('sys', [{ role: 'user', content: 'hi' }])).toEqual([{ role: 'system', content: 'sys' }, { role: 'user', content: 'hi' }]);
  });

  it('names the bad block; refuses images, thinking and results for no call', () => {
    const param = (messages: Record<string, unknown>[]): unknown => {
      try {
        anthropicToChatMessages(undefined, messages);
      } catch (err) {
        return [(err as { code: string }).code, (err as { options: { param: string } }).options.param];
      }
      return 'no error';
    };
    expect(param([{ role: 'robot', content: 'x' }])).toEqual(['validation_error', 'messages[0].role']);
    expect(param([{ role: 'user', content: [{ type: 'image', source: {} }] }])).toEqual(['unsupported_parameter', 'messages[0].content[0].type']);
    expect(param([{ role: 'assistant', content: [{ type: 'thinking', thinking: 'hm' }] }])).toEqual(['unsupported_parameter', 'messages[0].content[0].type']);
    expect(param([{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_x' }] }])).toEqual(['validation_error', 'messages[0].content[0].tool_use_id']);
    expect(param([{ role: 'user', content: [{ type: 'tool_use', id: 'a', name: 'b', input: {} }] }])).toEqual(['validation_error', 'messages[0].content[0].type']);
    expect(param([{ role: 'user', content: 5 }])).toEqual(['validation_error', 'messages[0].content']);
  });
});
