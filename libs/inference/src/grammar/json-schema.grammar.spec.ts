import type * as NodeLlamaCpp from 'node-llama-cpp';
import { GbnfBuilder, gbnfLiteral, grammarForJsonObject, grammarForJsonSchema, SchemaGrammarError } from './json-schema.grammar';

/**
 * The GBNF this module writes, checked by llama.cpp's own grammar engine (through node-llama-cpp,
 * no model needed): whole texts that must match, and texts that must not.
 */
describe('JSON schema → GBNF', () => {
  let llama: NodeLlamaCpp.Llama;
  beforeAll(async () => {
    const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
    llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, progressLogs: false });
  });
  afterAll(() => llama?.dispose());

  async function check(gbnf: string, yes: string[], no: string[]): Promise<void> {
    const grammar = (await llama.createGrammar({ grammar: gbnf })) as unknown as { _testText(t: string): boolean };
    for (const text of yes) expect([text, grammar._testText(text)]).toEqual([text, true]);
    for (const text of no) expect([text, grammar._testText(text)]).toEqual([text, false]);
  }

  it('integer: no fraction, no exponent; number may have both', async () => {
    await check(grammarForJsonSchema({ type: 'integer' }), ['0', '-12', '300000'], ['1.5', '-300000e-300', '1e3', '01', '']);
    await check(grammarForJsonSchema({ type: 'number' }), ['0', '-1.25', '3e-7'], ['1.', 'abc']);
  });

  it('the value ends the output: no trailing whitespace or newlines', async () => {
    await check(grammarForJsonSchema({ type: 'object', properties: { a: { type: 'boolean' } }, required: ['a'] }), ['{"a": true}', '{\n  "a":false\n}'], [
      '{"a": true}\n',
      '{"a": true}\n\n\n\n',
      '{"a": true} ',
      '{}',
    ]);
  });

  it('required, optional and additionalProperties', async () => {
    const schema = {
      type: 'object',
      properties: { id: { type: 'integer' }, name: { type: 'string', maxLength: 5 }, tag: { enum: ['x', 'y'] } },
      required: ['id'],
      additionalProperties: false,
    };
    await check(grammarForJsonSchema(schema), ['{"id": 1}', '{"id": 1, "name": "ab"}', '{"id":2,"tag":"y"}', '{"id":2,"name":"","tag":"x"}'], [
      '{"name": "ab"}',
      '{"id": 1, "other": 2}',
      '{"id": 1, "tag": "z"}',
      '{"id": 1, "name": "toolong"}',
    ]);
    await check(grammarForJsonSchema({ type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } } }), ['{}', '{"a": 1}', '{"b": 2}', '{"a":1,"b":2}'], ['{"b":1,"a":2}']);
    await check(grammarForJsonSchema({ type: 'object' }), ['{}', '{"k": [1, {"x": null}]}'], ['[]']);
    await check(grammarForJsonSchema({ type: 'object', additionalProperties: { type: 'integer' } }), ['{"a": 1, "b": 2}'], ['{"a": "1"}']);
  });

  it('anyOf, nullable types, $ref (recursive), $defs and definitions, allOf, arrays', async () => {
    await check(grammarForJsonSchema({ anyOf: [{ type: 'string', maxLength: 3 }, { type: 'null' }] }), ['"ab"', 'null'], ['1']);
    await check(grammarForJsonSchema({ type: ['integer', 'null'] }), ['3', 'null'], ['"3"']);
    const tree = {
      $ref: '#/$defs/node',
      $defs: { node: { type: 'object', properties: { v: { type: 'integer' }, kids: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 } }, required: ['v', 'kids'] } },
    };
    await check(grammarForJsonSchema(tree), ['{"v": 1, "kids": [{"v": 2, "kids": []}]}'], ['{"v": 1}']);
    await check(grammarForJsonSchema({ type: 'object', properties: { p: { $ref: '#/definitions/P' } }, required: ['p'], definitions: { P: { const: 'ok' } } }), ['{"p": "ok"}'], ['{"p": "no"}']);
    await check(grammarForJsonSchema({ allOf: [{ type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] }, { properties: { b: { type: 'boolean' } }, required: ['b'] }] }), ['{"a": 1, "b": true}'], ['{"a": 1}']);
    await check(grammarForJsonSchema({ type: 'array', items: { type: 'integer' }, minItems: 1, maxItems: 2 }), ['[1]', '[1, 2]'], ['[]', '[1,2,3]']);
    await check(grammarForJsonSchema({ type: 'string', format: 'date' }), ['"2024-05-01"'], ['"yesterday"']);
  });

  it('json_object: any object, nothing after it', async () => {
    await check(grammarForJsonObject(), ['{}', '{"a": [1, "x", true, null, {"b": -2.5}]}'], ['[1]', '"s"', '{} ']);
  });

  it('unsupported keywords and broken schemas are named', () => {
    expect(() => grammarForJsonSchema({ not: { type: 'string' } })).toThrow(SchemaGrammarError);
    expect(() => grammarForJsonSchema({ type: 'object', properties: {}, required: ['x'] })).toThrow(/required names "x"/);
    expect(() => grammarForJsonSchema({ type: 'wat' })).toThrow(/not a JSON schema type/);
    expect(() => grammarForJsonSchema({ $ref: 'http://x/y' })).toThrow(/only references inside/);
  });

  it('literals escape quotes, backslashes and control characters; several schemas share one builder', async () => {
    expect(gbnfLiteral('a"b\\c\n')).toBe('"a\\"b\\\\c\\n"');
    const g = new GbnfBuilder();
    const a = g.schema({ type: 'object', properties: { x: { type: 'integer' } }, required: ['x'] });
    const b = g.schema({ type: 'object', properties: { y: { type: 'boolean' } }, required: ['y'] });
    await check(g.build(`${gbnfLiteral('<call>')} (${a} | ${b})`), ['<call>{"x": 1}', '<call>{"y": false}'], ['<call>{"x": true}']);
  });
});
