import type { NestExpressApplication } from '@nestjs/platform-express';
import { json } from 'express';
import helmet from 'helmet';
import { Logger } from 'nestjs-pino';
import { AllExceptionsFilter, AppConfig, bodyParserErrors, createValidationPipe, jsonDepthLimit, jsonOnly } from '@app/common';
import { HttpTelemetry } from '@app/observability';

/**
 * Everything main.ts applies to the app, shared with the e2e tests so that they exercise the
 * same body limit, error envelope and validation as production.
 */
export function configureApp(app: NestExpressApplication): void {
  const config = app.get(AppConfig);
  app.useLogger(app.get(Logger));
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
      allowedHeaders: ['Authorization', 'X-API-Key', 'Content-Type', 'Cache-Control', 'X-Cache-Sampled', 'X-Request-Id'],
      exposedHeaders: ['X-Request-Id', 'Retry-After', 'X-Cache', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset'],
      maxAge: 600,
    });
  }
  app.use(helmet({ contentSecurityPolicy: false }));
  app.use(jsonOnly);
  app.use(json({ limit: config.bodyLimit, strict: true }));
  app.use(bodyParserErrors);
  app.use(jsonDepthLimit);
  app.useGlobalFilters(new AllExceptionsFilter());
  app.useGlobalPipes(createValidationPipe());
  app.enableShutdownHooks();
}
