import { ToolCallParser, ToolParseEvent } from './tool-call.parser';
import { GENERIC_TOOL_SYNTAX, ToolCallSyntax } from './tool.types';

const QWEN: ToolCallSyntax = {
  prefix: '<tool_call>\n{"name": "',
  paramsPrefix: '", "arguments": ',
  suffix: '}\n</tool_call>',
  suffixEndsTurn: false,
  optionalPrefixSpace: true,
  parallel: { sectionPrefix: '', betweenCalls: '\n', sectionSuffix: '' },
  source: 'Qwen',
};
const MISTRAL: ToolCallSyntax = {
  prefix: '{"name": "',
  paramsPrefix: '", "arguments": ',
  suffix: '}',
  suffixEndsTurn: false,
  optionalPrefixSpace: true,
  parallel: { sectionPrefix: '[TOOL_CALLS][', betweenCalls: ', ', sectionSuffix: ']' },
  source: 'Mistral',
};
const LLAMA31: ToolCallSyntax = {
  prefix: '<function=',
  paramsPrefix: '>',
  suffix: '</function>',
  suffixEndsTurn: true,
  optionalPrefixSpace: true,
  parallel: null,
  source: 'Llama 3.1',
};

/** Feeds `text` in chunks of `size` characters and folds the events into text and calls. */
function parse(syntax: ToolCallSyntax, text: string, size: number): { text: string; calls: { name: string; arguments: string }[]; events: ToolParseEvent[] } {
  const p = new ToolCallParser(syntax);
  const events: ToolParseEvent[] = [];
  for (let i = 0; i < text.length; i += size) events.push(...p.push(text.slice(i, i + size)));
  events.push(...p.flush());
  const calls: { name: string; arguments: string }[] = [];
  let content = '';
  for (const e of events) {
    if (e.type === 'text') content += e.text;
    else if (e.type === 'call-start') calls[e.index] = { name: e.name, arguments: '' };
    else if (e.type === 'call-arguments') calls[e.index].arguments += e.delta;
  }
  return { text: content, calls, events };
}

describe('ToolCallParser', () => {
  it.each([1, 2, 3, 7, 1000])('Qwen-style parallel calls, fed %i characters at a time', (size) => {
    const out = parse(QWEN, 'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris}"}}\n</tool_call>\n<tool_call>\n{"name": "time", "arguments": {}}\n</tool_call>', size);
    expect(out.text).toBe('Let me check.');
    expect(out.calls).toEqual([
      { name: 'get_weather', arguments: '{"city": "Paris}"}' },
      { name: 'time', arguments: '{}' },
    ]);
  });

  it.each([1, 4, 1000])('Mistral-style section with calls between brackets (%i)', (size) => {
    const out = parse(MISTRAL, '[TOOL_CALLS][{"name": "a", "arguments": {"x": [1, {"y": 2}]}}, {"name": "b", "arguments": {}}]', size);
    expect(out.text).toBe('');
    expect(out.calls).toEqual([
      { name: 'a', arguments: '{"x": [1, {"y": 2}]}' },
      { name: 'b', arguments: '{}' },
    ]);
  });

  it('Llama 3.1 style, a space before the prefix, text before and none after', () => {
    const out = parse(LLAMA31, 'Sure. <function=search>{"q": "cats"}</function>', 3);
    expect(out.text).toBe('Sure.');
    expect(out.calls).toEqual([{ name: 'search', arguments: '{"q": "cats"}' }]);
  });

  it('text that only looks like the start of a call is released at the end', () => {
    expect(parse(GENERIC_TOOL_SYNTAX, 'a < b and <tool', 2)).toMatchObject({ text: 'a < b and <tool', calls: [] });
    expect(parse(GENERIC_TOOL_SYNTAX, 'plain text', 100)).toMatchObject({ text: 'plain text', calls: [] });
  });

  it('a call cut short (max_tokens) is closed with what there is', () => {
    const out = parse(GENERIC_TOOL_SYNTAX, '<tool_call>{"name": "f", "arguments": {"a": "unfinish', 5);
    expect(out.calls).toEqual([{ name: 'f', arguments: '{"a": "unfinish' }]);
    expect(out.events.at(-1)).toEqual({ type: 'call-end', index: 0 });
  });

  it('arguments stream as several deltas', () => {
    const out = parse(GENERIC_TOOL_SYNTAX, '<tool_call>{"name": "f", "arguments": {"long": "abcdefghij"}}</tool_call>', 4);
    expect(out.events.filter((e) => e.type === 'call-arguments').length).toBeGreaterThan(3);
  });
});
