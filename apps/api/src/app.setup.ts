import type { NestExpressApplication } from '@nestjs/platform-express';
import { text } from 'express';
import type { NextFunction, Request, Response } from 'express';
import helmet from 'helmet';
import { Logger } from 'nestjs-pino';
import {
  AllExceptionsFilter,
  AppConfig,
  bodyDeadline,
  bodyParserErrors,
  createValidationPipe,
  jsonBody,
  jsonDepthLimit,
  jsonOnly,
  registerErrorFormat,
  registerErrorTranslator,
} from '@app/common';
import { AppLogger, HttpTelemetry, RouteTelemetryInterceptor } from '@app/observability';
import { schemaLimits } from './openai/schema-limits.middleware';
import { translateBatchingError } from './errors/batching-error.mapping';
import { ANTHROPIC_ERRORS } from './anthropic/anthropic.errors';
import { consoleHandlers } from './console/console.static';
import { setupOpenApi } from './openapi/openapi.setup';

/**
 * Everything main.ts applies to the app, shared with the e2e tests so that they exercise the
 * same body limit, error envelope and validation as production.
 */
export function configureApp(app: NestExpressApplication): void {
  const config = app.get(AppConfig);
  app.useLogger(new AppLogger(app.get(Logger)));
  app.disable('x-powered-by');
  // X-Forwarded-For is believed only from TRUSTED_PROXIES; otherwise req.ip is the TCP peer,
  // so a client cannot pick its own rate-limit bucket.
  app.set('trust proxy', config.trustedProxies.length > 0 ? [...config.trustedProxies] : false);
  // First, so that requests refused before routing (413, 415) are counted and timed too.
  app.use(app.get(HttpTelemetry).middleware);
  // Off unless CORS_ORIGINS names origins: a browser page elsewhere then cannot read answers.
  // Before the other middleware so that a preflight (OPTIONS) is answered without a key.
  if (config.corsOrigins.length > 0) {
    app.enableCors({
      origin: config.corsOrigins.includes('*') ? '*' : [...config.corsOrigins],
      methods: ['GET', 'POST', 'DELETE'],
      allowedHeaders: ['Authorization', 'X-API-Key', 'Content-Type', 'Cache-Control', 'X-Cache-Sampled', 'X-Request-Id', 'anthropic-version', 'anthropic-beta', 'anthropic-dangerous-direct-browser-access'],
      exposedHeaders: [...EXPOSED_HEADERS],
      maxAge: 600,
    });
  }
  // Which replica answered, for operators behind a load balancer (and the nginx test). Only a
  // name the operator chose (INSTANCE_ID): the host name would tell clients about the machine.
  const replica = config.instanceId;
  if (replica) {
    app.use((_req: unknown, res: { setHeader(name: string, value: string): void }, next: () => void) => {
      res.setHeader('X-Replica', replica);
      next();
    });
  }
  app.use(helmet({ contentSecurityPolicy: false }));
  // /openapi.json and the Swagger UI at /docs (assets from swagger-ui-dist, no CDN); public like
  // /health: they are plain Express routes, outside the key guard (DOCS_ENABLED=false: 404).
  if (config.docsEnabled) setupOpenApi(app, config);
  // The web console's static files, with their own strict CSP (CONSOLE_ENABLED=false: 404).
  if (config.consoleEnabled) app.use('/console', ...consoleHandlers());
  app.use(bodyDeadline(config.bodyTimeoutMs));
  // Document uploads: JSON or a plain-text body, up to RETRIEVAL_UPLOAD_LIMIT; parsed here, so
  // the global JSON parser below leaves them alone.
  app.use((req: Request, res: Response, next: NextFunction) =>
    req.method === 'POST' && DOCUMENTS_PATH.test(req.path) && req.is('text/plain') ? next() : jsonOnly(req, res, next),
  );
  app.use(DOCUMENTS_PATH, jsonBody(config.retrievalUploadLimit + 64 * 1024));
  app.use(DOCUMENTS_PATH, text({ type: 'text/plain', limit: config.retrievalUploadLimit }), plainTextDocument);
  app.use(jsonBody(config.bodyLimit));
  app.use(bodyParserErrors);
  app.use(jsonDepthLimit);
  app.use(schemaLimits(config.schemaLimits));
  // The scheduler's errors carry codes and data only; their HTTP status and headers are chosen here.
  registerErrorTranslator(translateBatchingError);
  // Anthropic's routes answer errors in Anthropic's shape, including those refused before routing.
  registerErrorFormat(ANTHROPIC_ERRORS);
  app.useGlobalFilters(new AllExceptionsFilter());
  app.useGlobalPipes(createValidationPipe());
  // Only traces need the route template while the request runs (to name the server span); logs
  // and metrics take it when the response ends. An interceptor costs every request an rxjs
  // pipeline and two async-resource bindings, so it is only there when tracing is on.
  if (config.otelExporterOtlpEndpoint) app.useGlobalInterceptors(app.get(RouteTelemetryInterceptor));
  // After the shutdown hooks (drain included) the process exits 0: Nest's default re-raises the
  // signal, which orchestrators and scripts read as a crash (exit 143).
  app.enableShutdownHooks(undefined, { useProcessExit: true });
}

/**
 * Every response header a browser client may want to read (CORS hides the others from scripts):
 * all the rate-limit headers the rate-limit guard sets (requests and tokens), budgets, caching,
 * Retry-After and the ids that tie a response to the logs.
 */
export const EXPOSED_HEADERS = [
  'X-Request-Id',
  'X-Replica',
  'Retry-After',
  'X-Cache',
  'X-Cache-Similarity',
  'Age',
  ...['Limit', 'Remaining', 'Reset'].flatMap((w) => [`X-RateLimit-${w}`, `X-RateLimit-${w}-Requests`, `X-RateLimit-${w}-Tokens`]),
  'X-Budget-Limit-Tokens',
  'X-Budget-Remaining-Tokens',
  'X-Budget-Reset',
  'X-Concurrency-Limit',
] as const;

const DOCUMENTS_PATH = /^\/v1\/collections\/[^/]+\/documents\/?$/;

/** A `text/plain` upload becomes the JSON form `{text, id}` (`?id=` names the document). */
function plainTextDocument(req: Request, _res: Response, next: NextFunction): void {
  if (typeof req.body === 'string') {
    const id = typeof req.query.id === 'string' ? req.query.id : undefined;
    req.body = { text: req.body, ...(id === undefined ? {} : { id }) };
  }
  next();
}
