import { CanActivate, ExecutionContext, Injectable, Inject } from '@nestjs/common';
import type { AuthConfig } from './auth.config';
import { Reflector } from '@nestjs/core';
import type { Request } from 'express';
import { AppConfig } from '@app/common';
import { RequestTelemetry, withSpan } from '@app/observability';
import { AuthErrorCode, AuthException } from './auth.exception';
import { AuthStatsService } from './auth-stats.service';
import { KeyAuthService } from './key-auth.service';
import { Principal, Scope } from './key.types';
import { AuthenticatedRequest } from './principal.decorator';
import { IS_PUBLIC, PROBE_ROUTE, ProbeKind, REQUIRED_SCOPES } from './public.decorator';

/** The key a request presents: `X-API-Key` (the seed's header) or `Authorization: Bearer`. */
export function presentedKey(req: Request): string | undefined {
  const header = req.headers['x-api-key'];
  const direct = Array.isArray(header) ? header[0] : header;
  if (direct && direct.trim()) return direct.trim();
  const auth = req.headers.authorization;
  const match = auth ? /^Bearer\s+(.+)$/i.exec(auth.trim()) : null;
  return match ? match[1].trim() : undefined;
}

/** What a route asks of its caller: nothing, or a key with these scopes. */
export type RouteAccess = { readonly open: true } | { readonly open: false; readonly scopes: readonly Scope[] };

const HEALTH_PATH = /^\/health(\/|$)/;
const METRICS_PATH = /^\/metrics$/;

/**
 * The path as routing sees it, for the path-based checks: percent-decoded, lower-case (Express
 * matches routes case-insensitively), repeated and trailing slashes dropped. `/METRICS/`,
 * `/%6Detrics` and `//metrics` are all `/metrics`.
 */
export function normalizedPath(path: string): string {
  let decoded = path;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    /* a malformed escape: judge the raw path */
  }
  const collapsed = decoded.toLowerCase().replace(/\/{2,}/g, '/');
  return collapsed.length > 1 ? collapsed.replace(/\/+$/, '') : collapsed;
}

/** The caller when AUTH_DISABLED=true (scopes: AUTH_DISABLED_SCOPES): no per-key limits, only the per-IP ones. */
export function anonymousPrincipal(scopes: readonly string[]): Principal {
  return {
    id: 'anonymous',
    name: 'anonymous',
    scopes: scopes as Scope[],
    limits: { rpm: 0, tpm: 0, concurrency: 0 },
    priority: 'normal',
    source: 'anonymous',
  };
}

/** The anonymous caller with the default AUTH_DISABLED_SCOPES (its id and name, e.g. for usage reports). */
export const ANONYMOUS: Principal = anonymousPrincipal(['generate']);

/**
 * Authenticates every request to a protected route and attaches its Principal (`req.principal`,
 * `@Caller()`). Probe routes (`@ProbeRoute()`, and any `/health*` or `/metrics` path, however it
 * is spelled, so that routes registered by other modules are covered too) are decided by
 * HEALTH_PUBLIC / METRICS_PUBLIC, other routes by `@Public()` and `@RequireScopes()` (default:
 * `generate`). With AUTH_DISABLED=true a request without a key gets the AUTH_DISABLED_SCOPES
 * (default `generate`); a route that needs more (admin, retrieval writes, protected metrics)
 * still needs a key that has it.
 */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  /** Each handler's access, read from its decorators once (the metadata never changes). */
  readonly #routes = new WeakMap<object, RouteAccess | ProbeKind>();
  readonly #anonymous: Principal;

  constructor(
    private readonly reflector: Reflector,
    private readonly auth: KeyAuthService,
    @Inject(AppConfig) private readonly config: AuthConfig,
    private readonly stats: AuthStatsService,
  ) {
    this.#anonymous = anonymousPrincipal(config.authDisabledScopes);
  }

  access(context: ExecutionContext): RouteAccess {
    const handler = context.getHandler();
    let declared = this.#routes.get(handler);
    if (!declared) {
      const targets = [handler, context.getClass()];
      declared =
        this.reflector.getAllAndOverride<ProbeKind>(PROBE_ROUTE, targets) ??
        (this.reflector.getAllAndOverride<boolean>(IS_PUBLIC, targets)
          ? { open: true }
          : { open: false, scopes: this.reflector.getAllAndOverride<Scope[]>(REQUIRED_SCOPES, targets) ?? ['generate'] });
      this.#routes.set(handler, declared);
    }
    const path = normalizedPath(context.switchToHttp().getRequest<Request>().path);
    const probe = declared === 'health' || HEALTH_PATH.test(path) ? 'health' : declared === 'metrics' || METRICS_PATH.test(path) ? 'metrics' : null;
    if (probe === 'health') return this.config.healthPublic ? { open: true } : { open: false, scopes: [] };
    if (probe === 'metrics') return this.config.metricsPublic ? { open: true } : { open: false, scopes: ['admin'] };
    return declared as RouteAccess;
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const access = this.access(context);
    if (access.open) return true;
    const req = context.switchToHttp().getRequest<AuthenticatedRequest>();
    if (this.auth.disabled && access.scopes.every((s) => this.#anonymous.scopes.includes(s))) {
      req.principal = this.#anonymous;
      return true;
    }
    return withSpan('auth', () => this.#authenticate(req, access.scopes), { 'auth.method': 'api_key' });
  }

  async #authenticate(req: AuthenticatedRequest, scopes: readonly Scope[]): Promise<boolean> {
    try {
      const key = presentedKey(req);
      if (!key) {
        throw new AuthException(
          AuthErrorCode.MissingKey,
          'Missing API key: send it as "Authorization: Bearer <key>" or "X-API-Key: <key>"',
        );
      }
      const principal = await this.auth.authenticate(key);
      const missing = scopes.filter((s) => !principal.scopes.includes(s));
      if (missing.length > 0) {
        throw new AuthException(AuthErrorCode.InsufficientScope, `This API key lacks the scope(s) ${missing.join(', ')} needed here`);
      }
      req.principal = principal;
      const telemetry = RequestTelemetry.of(req);
      if (telemetry) telemetry.keyId = principal.id;
      return true;
    } catch (err) {
      if (err instanceof AuthException) this.stats.rejected(err.code);
      throw err;
    }
  }
}
