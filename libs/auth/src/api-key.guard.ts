import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { Request } from 'express';
import { AppConfig } from '@app/common';
import { RequestTelemetry, withSpan } from '@app/observability';
import { AuthErrorCode, AuthException } from './auth.exception';
import { AuthStatsService } from './auth-stats.service';
import { KeyAuthService } from './key-auth.service';
import { Principal, Scope } from './key.types';
import { AuthenticatedRequest } from './principal.decorator';
import { IS_PUBLIC, REQUIRED_SCOPES } from './public.decorator';

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
const METRICS_PATH = /^\/metrics\/?$/;

/** The caller when AUTH_DISABLED=true: no per-key limits, only the per-IP ones. */
export const ANONYMOUS: Principal = {
  id: 'anonymous',
  name: 'anonymous',
  scopes: ['generate'],
  limits: { rpm: 0, tpm: 0, concurrency: 0 },
  priority: 'normal',
  source: 'anonymous',
};

/**
 * Authenticates every request to a protected route and attaches its Principal (`req.principal`,
 * `@Caller()`). `/health*` and `/metrics` are decided by HEALTH_PUBLIC / METRICS_PUBLIC (by path,
 * so that routes registered by other modules are covered too), other routes by `@Public()` and
 * `@RequireScopes()` (default: `generate`).
 */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  /** Each handler's access, read from its decorators once (the metadata never changes). */
  readonly #routes = new WeakMap<object, RouteAccess>();

  constructor(
    private readonly reflector: Reflector,
    private readonly auth: KeyAuthService,
    private readonly config: AppConfig,
    private readonly stats: AuthStatsService,
  ) {}

  access(context: ExecutionContext): RouteAccess {
    const path = context.switchToHttp().getRequest<Request>().path;
    if (HEALTH_PATH.test(path)) return this.config.healthPublic ? { open: true } : { open: false, scopes: [] };
    if (METRICS_PATH.test(path)) return this.config.metricsPublic ? { open: true } : { open: false, scopes: ['admin'] };
    const handler = context.getHandler();
    let access = this.#routes.get(handler);
    if (!access) {
      const targets = [handler, context.getClass()];
      access = this.reflector.getAllAndOverride<boolean>(IS_PUBLIC, targets)
        ? { open: true }
        : { open: false, scopes: this.reflector.getAllAndOverride<Scope[]>(REQUIRED_SCOPES, targets) ?? ['generate'] };
      this.#routes.set(handler, access);
    }
    return access;
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const access = this.access(context);
    if (access.open) return true;
    const req = context.switchToHttp().getRequest<AuthenticatedRequest>();
    if (this.auth.disabled) {
      req.principal = ANONYMOUS;
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
