// Imported first by main.ts: instrumentation must be registered before Nest, Express and http load.
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { NestInstrumentation } from '@opentelemetry/instrumentation-nestjs-core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { ReadableSpan, Span, SpanProcessor } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { CONFIG_SPEC, redactSecrets, redactUrl, registerSecrets } from '@app/common';

/** Probes and scrapes are not traced: one span every few seconds per pod says nothing. */
const UNTRACED = /^\/(health|metrics)(\/|$|\?)/;

/** Span attributes that carry a request's URL or query string (HTTP and Nest instrumentations). */
const URL_ATTRIBUTES = ['url.full', 'http.url', 'http.target', 'url.path'];

type Attributes = Record<string, unknown>;

/** Masks credentials in a span's attributes in place: by name in URLs, by value everywhere. */
function redactAttributes(attributes: Attributes, set: (name: string, value: string) => void): void {
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value !== 'string') continue;
    let clean: string;
    if (name === 'url.query') clean = value.length > 0 ? redactUrl(`?${value}`).slice(1) : value;
    else if (URL_ATTRIBUTES.includes(name)) clean = redactUrl(value);
    else clean = redactSecrets(value);
    if (clean !== value) set(name, clean);
  }
}

/**
 * Redacts credentials in every span before any exporter sees it: credential-like query
 * parameters (`?api_key=…`, `?x-api-key=…`) in the URL attributes, and any credential-shaped value
 * (`sk-…` keys, Bearer values, the API_KEYS) in any string attribute, event attribute, status
 * message or span name, for instance a key put in the path. The instrumentations record the raw URL (the HTTP one
 * only redacts a few cloud signature names), and a key must not end up in the trace backend any
 * more than in the logs. Attributes are checked when the span starts and again when it ends.
 */
class SecretRedaction implements SpanProcessor {
  onStart(span: Span): void {
    redactAttributes(span.attributes, (name, value) => span.setAttribute(name, value));
    const name = redactSecrets(span.name);
    if (name !== span.name) span.updateName(name);
  }

  onEnd(span: ReadableSpan): void {
    // Ended spans are read-only through the API; the exporters read these same objects.
    const writable = (target: Attributes) => (name: string, value: string) => (target[name] = value);
    redactAttributes(span.attributes, writable(span.attributes as Attributes));
    for (const event of span.events) if (event.attributes) redactAttributes(event.attributes, writable(event.attributes as Attributes));
    // An error's message may quote client input (an unknown model name, a collection name).
    const status = span.status as { message?: string };
    if (status.message) status.message = redactSecrets(status.message);
    const name = redactSecrets(span.name);
    if (name !== span.name) (span as { name: string }).name = name;
  }

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
  registerSecrets(CONFIG_SPEC.API_KEYS.parse(env.API_KEYS));
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName, [ATTR_SERVICE_VERSION]: process.env.npm_package_version ?? '0.1.0' }),
    spanProcessors: [
      new SecretRedaction(),
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
