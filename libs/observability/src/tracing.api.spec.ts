import { context, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { activeTraceIds, flushTracing, recordSpan, withSpan } from './tracing.api';

describe('tracing API', () => {
  const exporter = new InMemorySpanExporter();
  beforeAll(() => {
    // register() also installs the AsyncLocalStorage context manager, as apps/api/src/tracing.ts does.
    new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }).register();
  });
  beforeEach(() => exporter.reset());

  it('withSpan wraps sync and async work, nests children, and marks failures', async () => {
    const value = await withSpan('outer', async () => {
      expect(activeTraceIds()?.traceId).toMatch(/^[0-9a-f]{32}$/);
      withSpan('inner', () => 1);
      await expect(withSpan('failing', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
      return 42;
    }, { 'test.attr': 'x' });
    expect(value).toBe(42);
    const spans = exporter.getFinishedSpans();
    const outer = spans.find((s) => s.name === 'outer');
    expect(outer?.attributes).toEqual({ 'test.attr': 'x' });
    for (const name of ['inner', 'failing']) expect(spans.find((s) => s.name === name)?.parentSpanContext?.spanId).toBe(outer?.spanContext().spanId);
    expect(spans.find((s) => s.name === 'failing')?.status).toMatchObject({ code: 2, message: 'boom' });
    expect(() => withSpan('sync-fail', () => {
      throw new Error('sync');
    })).toThrow('sync');
    expect(activeTraceIds()).toBeUndefined();
    await flushTracing();
  });

  it('recordSpan builds spans after the fact from performance.now() times', () => {
    const start = performance.now() - 50;
    const parent = recordSpan('parent', start, start + 40);
    recordSpan('child', start + 10, start + 20, { parent: trace.setSpan(context.active(), parent), error: 'failed' });
    const [p, c] = ['parent', 'child'].map((n) => exporter.getFinishedSpans().find((s) => s.name === n));
    const ms = (t: [number, number]): number => t[0] * 1000 + t[1] / 1e6;
    expect(ms(p!.duration)).toBeCloseTo(40, 0);
    expect(ms(c!.duration)).toBeCloseTo(10, 0);
    expect(c!.parentSpanContext?.spanId).toBe(p!.spanContext().spanId);
    expect(c!.status.code).toBe(2);
  });
});
