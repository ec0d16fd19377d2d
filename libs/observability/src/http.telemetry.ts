import { CallHandler, ExecutionContext, Injectable, NestInterceptor, NestMiddleware } from '@nestjs/common';
import { trace } from '@opentelemetry/api';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import type { NextFunction, Request, Response } from 'express';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Counter, Gauge, Histogram } from 'prom-client';
import { Observable } from 'rxjs';
import { METRIC } from './metrics.providers';
import { RequestTelemetry } from './request.telemetry';
import { activeTraceIds } from './tracing.api';

/** Probes and scrapes: neither counted in the request metrics nor logged per request. */
export const UNOBSERVED_PATH = /^\/(health|metrics)(\/|$|\?)/;
/** The `endpoint` label of a request that matched no route: raw paths would be unbounded. */
export const UNMATCHED_ROUTE = 'unmatched';

const staticRoutes = new WeakMap<object, Set<string>>();

/**
 * The route template of a request: the matched route (`/v1/models/:id`), else, for a request
 * turned away before routing (413, 415), the static route with that exact path, else "unmatched".
 */
export function routeTemplate(req: Request): string {
  const matched = (req.route as { path?: unknown } | undefined)?.path;
  // A wildcard is a catch-all middleware's route (it stays on req.route after a 404), not an endpoint.
  if (typeof matched === 'string' && !matched.includes('*')) return matched;
  const app = req.app as unknown as { router?: { stack?: { route?: { path?: unknown } }[] } } | undefined;
  if (!app?.router?.stack) return UNMATCHED_ROUTE;
  let known = staticRoutes.get(app);
  if (!known) {
    known = new Set(
      app.router.stack
        .map((layer) => layer.route?.path)
        .filter((p): p is string => typeof p === 'string' && !/[:*{(]/.test(p)),
    );
    staticRoutes.set(app, known);
  }
  return known.has(req.path) ? req.path : UNMATCHED_ROUTE;
}

/**
 * The first middleware of the app (configureApp installs it before body parsing, so that 413
 * and 415 answers are counted too): attaches the request's telemetry and records
 * `llm_requests_total`, `llm_request_duration_seconds` and `llm_active_requests` when the
 * response ends. A client that leaves before the response finished is counted with status 499.
 */
@Injectable()
export class HttpTelemetry {
  constructor(
    @InjectMetric(METRIC.requests) private readonly requests: Counter<'endpoint' | 'status'>,
    @InjectMetric(METRIC.requestDuration) private readonly duration: Histogram<'endpoint'>,
    @InjectMetric(METRIC.activeRequests) private readonly active: Gauge,
  ) {}

  readonly middleware = (req: Request, res: Response, next: NextFunction): void => {
    const telemetry = RequestTelemetry.attach(req);
    const ids = activeTraceIds();
    if (ids) {
      telemetry.traceId = ids.traceId;
      telemetry.spanId = ids.spanId;
      telemetry.serverSpan = trace.getActiveSpan();
    }
    const release = (): void => telemetry.end();
    res.once('finish', release);
    res.once('close', release);
    if (UNOBSERVED_PATH.test(req.url)) return next();
    this.active.inc();
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      this.active.dec();
      const endpoint = (telemetry.route = routeTemplate(req));
      const status = res.writableFinished ? String(res.statusCode) : '499';
      this.requests.inc({ endpoint, status });
      this.duration.observe({ endpoint }, (performance.now() - telemetry.startedAt) / 1000);
    };
    res.once('finish', end);
    res.once('close', end);
    next();
  };
}

/**
 * Makes the request's telemetry reachable with `RequestTelemetry.current()` for the rest of its
 * async flow. Runs as Nest middleware, after body parsing: async context does not survive the
 * body stream's events.
 */
@Injectable()
export class RequestContextMiddleware implements NestMiddleware {
  use(req: IncomingMessage, _res: ServerResponse, next: () => void): void {
    const telemetry = RequestTelemetry.of(req) ?? RequestTelemetry.attach(req);
    telemetry.run(next);
  }
}

/** Once a route matched: names the HTTP server span after the route template (bounded span names). */
@Injectable()
export class RouteTelemetryInterceptor implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() === 'http') {
      const req = context.switchToHttp().getRequest<Request>();
      const route = routeTemplate(req);
      const telemetry = RequestTelemetry.of(req);
      if (telemetry) telemetry.route = route;
      const span = telemetry?.serverSpan;
      if (span && route !== UNMATCHED_ROUTE) {
        span.setAttribute('http.route', route);
        span.updateName(`${req.method} ${route}`);
      }
    }
    return next.handle();
  }
}
