import { Attributes, Context, context, INVALID_SPAN_CONTEXT, isSpanContextValid, ProxyTracerProvider, Span, SpanStatusCode, trace } from '@opentelemetry/api';

/** Instrumentation scope of the platform's own spans. */
export const TRACER_NAME = 'llm-serving';

function tracer(): ReturnType<typeof trace.getTracer> {
  return trace.getTracer(TRACER_NAME);
}

/** Handed to `withSpan` callbacks while tracing is off. */
const NO_SPAN = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/** Whether a tracer provider is registered (apps/api/src/tracing.ts does it when OTLP is configured). */
function tracingOn(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegateTracer(TRACER_NAME) !== undefined;
}

function fail(span: Span, err: unknown): void {
  span.recordException(err instanceof Error ? err : String(err));
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
}

/**
 * Runs `fn` inside a new active span that ends when `fn` returns or settles; an exception marks
 * the span as failed and is rethrown. Without a tracer provider (tracing off) `fn` just runs: the
 * no-op span, its context and the promise wrapper would cost every request for nothing.
 */
export function withSpan<T>(name: string, fn: (span: Span) => T, attributes?: Attributes): T {
  if (!tracingOn()) return fn(NO_SPAN);
  return tracer().startActiveSpan(name, { attributes }, (span) => {
    try {
      const result = fn(span);
      if (result instanceof Promise) {
        return result.then(
          (value: unknown) => {
            span.end();
            return value;
          },
          (err: unknown) => {
            fail(span, err);
            span.end();
            throw err;
          },
        ) as T;
      }
      span.end();
      return result;
    } catch (err) {
      fail(span, err);
      span.end();
      throw err;
    }
  });
}

/**
 * Records a span after the fact from measured times (`performance.now()` values), as a child of
 * `parent` (default: the active context). Returns the ended span so that children can hang off it.
 */
export function recordSpan(
  name: string,
  start: number,
  end: number,
  options: { attributes?: Attributes; parent?: Context; error?: string } = {},
): Span {
  const span = tracer().startSpan(name, { startTime: start, attributes: options.attributes }, options.parent ?? context.active());
  if (options.error) span.setStatus({ code: SpanStatusCode.ERROR, message: options.error });
  span.end(Math.max(start, end));
  return span;
}

/** The active span's ids, for log lines; undefined when tracing is off or no span is active. */
export function activeTraceIds(): { traceId: string; spanId: string } | undefined {
  const ctx = trace.getSpan(context.active())?.spanContext();
  return ctx && isSpanContextValid(ctx) ? { traceId: ctx.traceId, spanId: ctx.spanId } : undefined;
}

/** Exports the spans still buffered (at shutdown); a no-op when tracing is off. */
export async function flushTracing(): Promise<void> {
  const provider = trace.getTracerProvider();
  const delegate = provider instanceof ProxyTracerProvider ? provider.getDelegate() : provider;
  const flush = (delegate as { forceFlush?: () => Promise<void> }).forceFlush;
  if (typeof flush === 'function') await flush.call(delegate);
}
