import { checkSchemaComplexity, GrammarCompiler, GrammarWorker, MAX_GRAMMAR_BYTES, SchemaLimits } from './grammar.compiler';
import { InferenceException } from './inference.exception';

const LIMITS: SchemaLimits = { maxBytes: 64 * 1024, maxEnumValues: 1000, maxDepth: 10, maxProperties: 1000 };
const enumSchema = (n: number, width = 8): object => ({
  type: 'object',
  properties: { v: { enum: Array.from({ length: n }, (_, i) => `v${i}`.padEnd(width, 'x')) } },
  required: ['v'],
});

function refusal(fn: () => unknown): { code: string; message: string } | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err as InferenceException;
  }
}

describe('checkSchemaComplexity', () => {
  it('accepts schemas within the limits and returns their JSON', () => {
    expect(checkSchemaComplexity(enumSchema(1000), LIMITS)).toBe(JSON.stringify(enumSchema(1000)));
  });

  it('refuses each limit with 400 schema_too_complex naming it', () => {
    let deep: object = { type: 'string' };
    for (let i = 0; i < 12; i++) deep = { type: 'object', properties: { a: deep } };
    const many = { type: 'object', properties: Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`p${i}`, { type: 'string' }])) };
    const cases: [object, RegExp][] = [
      [enumSchema(1001), /more than 1000 enum\/const values \(SCHEMA_MAX_ENUM_VALUES\)/],
      [enumSchema(900, 80), /bytes of JSON; at most 65536 \(SCHEMA_MAX_BYTES\)/],
      [deep, /nested 11 deep; at most 10 \(SCHEMA_MAX_DEPTH\)/],
      [many, /more than 1000 object properties \(SCHEMA_MAX_PROPERTIES\)/],
      [{ anyOf: Array.from({ length: 600 }, (_, i) => ({ const: i })).concat(Array.from({ length: 600 }, (_, i) => ({ const: -i }))) }, /SCHEMA_MAX_ENUM_VALUES/],
    ];
    for (const [schema, message] of cases) {
      const err = refusal(() => checkSchemaComplexity(schema, LIMITS));
      expect(err).toBeInstanceOf(InferenceException);
      expect((err as InferenceException).toEnvelope().error).toMatchObject({ code: 'schema_too_complex', param: 'response_format', type: 'invalid_request_error' });
      expect(err?.message).toMatch(message);
    }
  });

  it('walks a schema nested far deeper than the stack allows without recursion', () => {
    let deep: object = { type: 'string' };
    for (let i = 0; i < 50_000; i++) deep = { items: deep };
    expect(refusal(() => checkSchemaComplexity(deep, { ...LIMITS, maxBytes: 64 * 1024 * 1024 }))?.message).toMatch(/SCHEMA_MAX_DEPTH/);
  });
});

describe('GrammarCompiler', () => {
  const compilers: GrammarCompiler[] = [];
  afterAll(() => Promise.all(compilers.map((c) => c.close())));
  const compiler = (parse = async (gbnf: string) => ({ gbnf }), limits = LIMITS): GrammarCompiler => {
    const c = new GrammarCompiler(limits, parse);
    compilers.push(c);
    return c;
  };

  it('converts on a worker thread: the event loop keeps turning during a large conversion', async () => {
    const c = compiler(async (gbnf) => ({ gbnf }), { ...LIMITS, maxBytes: 8 * 1024 * 1024, maxEnumValues: 1_000_000 });
    // Warm the worker (its first job loads the converter).
    await c.compileSchema(enumSchema(2));
    let ticks = 0;
    let worstGap = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      worstGap = Math.max(worstGap, now - last);
      last = now;
      ticks++;
    }, 2);
    // 60,000 values: a grammar far over the cap, whose conversion takes a few hundred ms.
    const started = performance.now();
    const err = await c.compileSchema(enumSchema(60_000)).catch((e: unknown) => e as InferenceException);
    const elapsed = performance.now() - started;
    clearInterval(timer);
    expect((err as InferenceException).code).toBe('schema_too_complex');
    expect((err as InferenceException).message).toMatch(new RegExp(`its grammar would have \\d+ bytes; at most ${MAX_GRAMMAR_BYTES}`));
    // The loop ran all along: ticks kept coming while the worker converted.
    expect(ticks).toBeGreaterThan(elapsed / 20);
    console.log(`conversion ${elapsed.toFixed(0)} ms, ${ticks} timer ticks, longest gap ${worstGap.toFixed(1)} ms`);
  });

  it('compiles a schema once: concurrent and later requests share the compiled grammar, keyed by the schema text', async () => {
    let parsed = 0;
    const c = compiler(async (gbnf) => ({ gbnf, n: ++parsed }));
    const [a, b] = await Promise.all([c.compileSchema(enumSchema(3)), c.compileSchema(enumSchema(3))]);
    expect(a).toBe(b);
    expect(await c.compileSchema(JSON.parse(JSON.stringify(enumSchema(3))) as object)).toBe(a);
    expect(parsed).toBe(1);
    expect(c.cachedEntries).toBe(1);
    expect(c.cachedBytes).toBe(Buffer.byteLength((a as { gbnf: string }).gbnf));
  });

  it('a schema the converter refuses (on the worker) is a 400 unsupported_schema naming the field', async () => {
    const c = compiler();
    await expect(c.compileSchema({ not: { type: 'string' } }, 'response_format')).rejects.toMatchObject({ code: 'unsupported_schema', options: { param: 'response_format' } });
  });

  it('a native parse failure is a 400 unsupported_schema and is not cached', async () => {
    let calls = 0;
    const c = compiler(async () => {
      calls++;
      throw new Error('Failed to parse grammar');
    });
    for (let i = 0; i < 2; i++) await expect(c.compileSchema(enumSchema(2))).rejects.toMatchObject({ code: 'unsupported_schema' });
    expect(calls).toBe(2);
    expect(c.cachedEntries).toBe(0);
  });

  it('a conversion that runs past its deadline is refused and the worker replaced', async () => {
    const worker = new GrammarWorker(1);
    const c = new GrammarCompiler({ ...LIMITS, maxBytes: 8 * 1024 * 1024, maxEnumValues: 1_000_000 }, async (gbnf) => ({ gbnf }), worker);
    compilers.push(c);
    await expect(c.compileSchema(enumSchema(50_000))).rejects.toMatchObject({ code: 'schema_too_complex', message: expect.stringMatching(/took longer than 1 ms/) });
    // The next job gets a fresh worker (given time).
    const patient = new GrammarCompiler(LIMITS, async (gbnf) => ({ gbnf }));
    compilers.push(patient);
    await expect(patient.compileSchema(enumSchema(2))).resolves.toMatchObject({ gbnf: expect.stringContaining('root ::=') });
  });
});
