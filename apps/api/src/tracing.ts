// Imported first by main.ts: instrumentation must be registered before Nest, Express and http load.
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { NestInstrumentation } from '@opentelemetry/instrumentation-nestjs-core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { Span, SpanProcessor } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { CONFIG_SPEC, redactUrl } from '@app/common';

/** Probes and scrapes are not traced: one span every few seconds per pod says nothing. */
const UNTRACED = /^\/(health|metrics)(\/|$|\?)/;

/** Span attributes that carry a request's query string (HTTP and Nest instrumentations). */
const URL_ATTRIBUTES = ['url.full', 'http.url', 'http.target'];

/**
 * Redacts credential-like query parameters (`?api_key=…`) in the URL attributes of every span as
 * it starts, before any exporter sees it: the instrumentations record the raw URL (the HTTP one
 * only redacts a few cloud signature names), and a key sent in the query string must not end up
 * in the trace backend any more than in the logs.
 */
class QueryRedaction implements SpanProcessor {
  onStart(span: Span): void {
    const attributes = span.attributes;
    for (const name of URL_ATTRIBUTES) {
      const value = attributes[name];
      if (typeof value === 'string' && value.includes('?')) span.setAttribute(name, redactUrl(value));
    }
    const query = attributes['url.query'];
    if (typeof query === 'string' && query.length > 0) span.setAttribute('url.query', redactUrl(`?${query}`).slice(1));
  }

  onEnd(): void {}

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Starts OpenTelemetry tracing when OTEL_EXPORTER_OTLP_ENDPOINT is set (off otherwise): spans go to
 * `<endpoint>/v1/traces` over OTLP/HTTP (JSON), batched and flushed every second and at shutdown.
 * HTTP server spans and Nest handler spans are automatic; the platform adds `auth`,
 * `cache.lookup`, `llm.generation` > `llm.queue_wait` / `llm.prefill` / `llm.decode`.
 */
export function startTracing(env: Record<string, string | undefined>): NodeTracerProvider | undefined {
  let endpoint: string | undefined;
  let serviceName: string;
  try {
    endpoint = CONFIG_SPEC.OTEL_EXPORTER_OTLP_ENDPOINT.parse(env.OTEL_EXPORTER_OTLP_ENDPOINT);
    serviceName = CONFIG_SPEC.OTEL_SERVICE_NAME.parse(env.OTEL_SERVICE_NAME);
  } catch {
    return undefined; // main.ts reports invalid configuration and exits
  }
  if (!endpoint) return undefined;
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName, [ATTR_SERVICE_VERSION]: process.env.npm_package_version ?? '0.1.0' }),
    spanProcessors: [
      new QueryRedaction(),
      new BatchSpanProcessor(new OTLPTraceExporter({ url: `${endpoint.replace(/\/+$/, '')}/v1/traces` }), { scheduledDelayMillis: 1000 }),
    ],
  });
  provider.register();
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      new HttpInstrumentation({ ignoreIncomingRequestHook: (req) => UNTRACED.test(req.url ?? '') }),
      new NestInstrumentation(),
    ],
  });
  return provider;
}

export const tracerProvider = startTracing(process.env);
