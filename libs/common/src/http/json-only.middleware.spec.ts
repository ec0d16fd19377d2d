import { jsonDepth, MAX_JSON_DEPTH } from './json-only.middleware';

describe('jsonDepth', () => {
  it('measures nesting without recursion, even far beyond the stack', () => {
    expect(jsonDepth('x')).toBe(0);
    expect(jsonDepth({ messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }] })).toBe(5);
    let deep: unknown = 'x';
    for (let i = 0; i < 200_000; i++) deep = [deep];
    expect(jsonDepth(deep)).toBe(MAX_JSON_DEPTH + 1); // stops as soon as the limit is passed
    expect(jsonDepth(deep, Infinity)).toBe(200_000);
  });
});
