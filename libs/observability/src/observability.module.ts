import { Global, MiddlewareConsumer, Module, NestModule, OnApplicationShutdown, RequestMethod } from '@nestjs/common';
import type { ObservabilityConfig } from './observability.config';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LoggerModule } from 'nestjs-pino';
import { levels, stdTimeFunctions } from 'pino';
import { AppConfig, looksSecret, redactSecrets, redactUrl, registerSecrets, setDebugEnabled } from '@app/common';
import { logSink, resolveLogFormat } from './log.format';
import { DependencyProbes } from './dependency.probes';
import { GpuMonitor } from './gpu.monitor';
import { HttpTelemetry, RequestContextMiddleware, RouteTelemetryInterceptor, UNOBSERVED_PATH } from './http.telemetry';
import { METRIC_PROVIDERS } from './metrics.providers';
import { MetricsService } from './metrics.service';
import { requestLogFields } from './request-log.fields';
import { SchedulerTelemetry } from './scheduler.telemetry';
import { ModelTelemetry } from './model.telemetry';
import { activeTraceIds, flushTracing } from './tracing.api';

/**
 * Client request ids accepted as they are: a letter or digit, then up to 127 letters, digits or
 * `_ . : -`, and nothing shaped like a credential (a key sent as X-Request-Id would otherwise be
 * echoed in the response header and written into every log line of the request).
 */
const REQUEST_ID = /^[A-Za-z0-9][\w.:-]{0,127}$/;

function presentedSecrets(req: IncomingMessage): string[] {
  const values: string[] = [];
  const direct = req.headers['x-api-key'];
  for (const v of Array.isArray(direct) ? direct : direct ? [direct] : []) values.push(v.trim());
  const auth = req.headers.authorization;
  if (auth) values.push(auth.trim().replace(/^\S+\s+/, ''));
  return values.filter((v) => v.length > 0);
}

/** Accepts a safe client X-Request-Id or makes one, and echoes it on the response. */
export function requestId(req: IncomingMessage, res: ServerResponse): string {
  const given = req.headers['x-request-id'];
  const candidate = Array.isArray(given) ? given[0] : given;
  const safe =
    candidate !== undefined &&
    REQUEST_ID.test(candidate) &&
    !looksSecret(candidate) &&
    !presentedSecrets(req).some((secret) => candidate.includes(secret) || (candidate.length >= 8 && secret.includes(candidate)));
  const id = safe ? candidate : randomUUID();
  res.setHeader('X-Request-Id', id);
  return id;
}

/**
 * Logs, metrics and the request telemetry that ties them (and traces) together. Global, so that
 * any library can inject MetricsService; the `/metrics` route itself is the API app's.
 *
 * - Logs on stdout (pino): JSON lines, or pretty ones for a terminal (LOG_FORMAT), one per request with route, status, latency, tokens,
 *   cache result, key id and trace id; keys never, prompts only with LOG_PROMPTS=true.
 * - Prometheus series in prom-client's registry (see METRIC), Node process metrics included.
 */
@Global()
@Module({
  imports: [
    LoggerModule.forRootAsync({
      inject: [AppConfig],
      useFactory: (config: ObservabilityConfig) => {
        // pino's number for LOG_LEVEL ('silent' is above every level).
        const threshold = levels.values[config.logLevel] ?? Infinity;
        // Static keys are masked by value too, whatever their shape.
        registerSecrets(config.apiKeys);
        // The last word on secrets: every finished line is searched for credential-shaped values
        // (sk-… keys, Bearer/Basic values, the API_KEYS) and they are masked, whichever field or
        // message carries them: a path, an unknown query parameter, an error message, a prompt.
        const sink = logSink(resolveLogFormat(config.logFormat));
        const redacting = { write: (line: string) => sink.write(redactSecrets(line)) };
        setDebugEnabled(config.logLevel);
        return {
          pinoHttp: [
            {
              level: config.logLevel,
              // ISO-8601 in both formats (pino's default is epoch milliseconds).
              timestamp: stdTimeFunctions.isoTime,
              genReqId: requestId,
              // Probes and scrapes arrive every few seconds; logging them would drown the requests.
              autoLogging: { ignore: (req: IncomingMessage) => UNOBSERVED_PATH.test(req.url ?? '') },
              redact: {
                paths: ['req.headers.authorization', 'req.headers["x-api-key"]', 'req.headers.cookie'],
                censor: '[redacted]',
              },
              // Every line logged inside a traced request carries its trace id.
              mixin: () => {
                const ids = activeTraceIds();
                return ids ? { trace_id: ids.traceId, span_id: ids.spanId } : {};
              },
              // 'silent' below LOG_LEVEL: pino-http would otherwise build each line's fields only to drop them.
              customLogLevel: (_req, res, err) => {
                const level = err || res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info';
                return levels.values[level] >= threshold ? level : 'silent';
              },
              customSuccessObject: (req, res, val: object) => ({ ...val, ...requestLogFields(req, res, config.logPrompts) }),
              customErrorObject: (req, res, _err, val: object) => ({ ...val, ...requestLogFields(req, res, config.logPrompts) }),
              serializers: {
                req: (req: { id: unknown; method: string; url: string }) => ({ id: req.id, method: req.method, url: redactUrl(req.url) }),
                res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
              },
            },
            redacting,
          ],
        };
      },
    }),
  ],
  providers: [
    ...METRIC_PROVIDERS,
    DependencyProbes,
    MetricsService,
    HttpTelemetry,
    SchedulerTelemetry,
    ModelTelemetry,
    GpuMonitor,
    RouteTelemetryInterceptor,
  ],
  exports: [...METRIC_PROVIDERS, DependencyProbes, MetricsService, HttpTelemetry, RouteTelemetryInterceptor, SchedulerTelemetry, ModelTelemetry, GpuMonitor],
})
export class ObservabilityModule implements NestModule, OnApplicationShutdown {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(RequestContextMiddleware).forRoutes({ path: '{*path}', method: RequestMethod.ALL });
  }

  /** Exports the spans still buffered before the process goes (tracing on). */
  async onApplicationShutdown(): Promise<void> {
    await flushTracing().catch(() => undefined);
  }
}
