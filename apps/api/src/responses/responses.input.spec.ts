import { itemsToMessages, normalizeInput, outputTextOf } from './responses.input';

const ids = (i: number, kind: string): string => `${kind}_x_i${i}`;

describe('Responses input items', () => {
  it('a string is one user message; messages get a type, an id and text parts', () => {
    expect(normalizeInput('Hi', ids)).toEqual([{ type: 'message', id: 'msg_x_i0', role: 'user', content: [{ type: 'input_text', text: 'Hi' }] }]);
    expect(normalizeInput([{ role: 'assistant', content: 'Yes', id: 'msg_kept' }, { type: 'message', role: 'developer', content: [{ type: 'input_text', text: 'Be brief' }] }], ids)).toEqual([
      { type: 'message', id: 'msg_kept', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text: 'Yes', annotations: [] }] },
      { type: 'message', id: 'msg_x_i1', role: 'developer', content: [{ type: 'input_text', text: 'Be brief' }] },
    ]);
  });

  it('names the bad field, and refuses what it cannot honour', () => {
    const param = (input: unknown[]): unknown => {
      try {
        normalizeInput(input, ids);
      } catch (err) {
        return [(err as { code: string }).code, (err as { options: { param: string } }).options.param];
      }
      return 'no error';
    };
    expect(param([{ role: 'robot', content: 'x' }])).toEqual(['validation_error', 'input[0].role']);
    expect(param([{ role: 'user', content: [{ type: 'input_text', text: 3 }] }])).toEqual(['validation_error', 'input[0].content[0].text']);
    expect(param([{ role: 'user', content: [{ type: 'input_file', file_id: 'f' }] }])).toEqual(['unsupported_parameter', 'input[0].content[0]']);
    expect(param([{ type: 'function_call', call_id: 'c', name: 'bad name', arguments: '{}' }])).toEqual(['validation_error', 'input[0].name']);
    expect(param([{ type: 'function_call_output', output: 'x' }])).toEqual(['validation_error', 'input[0].call_id']);
    expect(param([{ type: 'reasoning' }])).toEqual(['unsupported_parameter', 'input[0].type']);
    expect(param([{ type: 'web_search_call' }])).toEqual(['unsupported_parameter', 'input[0].type']);
    expect(param(['text'])).toEqual(['validation_error', 'input[0]']);
  });

  it('an assistant message and the calls after it are one turn; each output answers an earlier call', () => {
    const items = normalizeInput(
      [
        { role: 'user', content: 'Weather?' },
        { role: 'assistant', content: 'Looking.' },
        { type: 'function_call', call_id: 'c1', name: 'w', arguments: '{"city":"Oslo"}' },
        { type: 'function_call', call_id: 'c2', name: 'w', arguments: '{"city":"Lima"}' },
        { type: 'function_call_output', call_id: 'c1', output: 'cold' },
        { type: 'function_call_output', call_id: 'c2', output: [{ type: 'input_text', text: 'warm' }] },
      ],
      ids,
    );
    expect(itemsToMessages(items, 'Be brief.', 0)).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Weather?' },
      { role: 'assistant', content: 'Looking.', toolCalls: [{ id: 'c1', name: 'w', arguments: '{"city":"Oslo"}' }, { id: 'c2', name: 'w', arguments: '{"city":"Lima"}' }] },
      { role: 'tool', content: 'cold', toolCallId: 'c1' },
      { role: 'tool', content: 'warm', toolCallId: 'c2' },
    ]);
    // Item 2 of this request's input (after one item from an earlier response) answers nothing.
    const orphan = normalizeInput([{ type: 'function_call_output', call_id: 'nope', output: 'x' }], ids);
    expect(() => itemsToMessages([{ type: 'message', role: 'user', content: [] }, ...orphan], undefined, 1)).toThrow(/input\[0\]\.call_id/);
  });

  it('output_text joins the text of message items', () => {
    expect(outputTextOf([{ type: 'message', content: [{ type: 'output_text', text: 'a' }, { type: 'refusal', refusal: 'no' }] }, { type: 'function_call' }, { type: 'message', content: [{ type: 'output_text', text: 'b' }] }])).toBe('ab');
  });
});
