import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { Request } from 'express';
import { RequestTelemetry, withSpan } from '@app/observability';
import { AuthErrorCode, AuthException } from './auth.exception';
import { IS_PUBLIC } from './public.decorator';
import { keyId, StaticKeyStore } from './static-key.store';

/** The key a request presents: `X-API-Key` (the seed's header) or `Authorization: Bearer`. */
export function presentedKey(req: Request): string | undefined {
  const header = req.headers['x-api-key'];
  const direct = Array.isArray(header) ? header[0] : header;
  if (direct && direct.trim()) return direct.trim();
  const auth = req.headers.authorization;
  const match = auth ? /^Bearer\s+(.+)$/i.exec(auth.trim()) : null;
  return match ? match[1].trim() : undefined;
}

@Injectable()
export class ApiKeyGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly keys: StaticKeyStore,
  ) {}

  canActivate(context: ExecutionContext): boolean {
    const isPublic = this.reflector.getAllAndOverride<boolean>(IS_PUBLIC, [context.getHandler(), context.getClass()]);
    if (isPublic || this.keys.disabled) return true;
    return withSpan('auth', () => this.#authenticate(context.switchToHttp().getRequest<Request>()), { 'auth.method': 'api_key' });
  }

  #authenticate(req: Request): boolean {
    const key = presentedKey(req);
    if (!key) {
      throw new AuthException(
        AuthErrorCode.MissingKey,
        'Missing API key: send it as "Authorization: Bearer <key>" or "X-API-Key: <key>"',
      );
    }
    if (!this.keys.has(key)) throw new AuthException(AuthErrorCode.InvalidKey, 'Invalid API key');
    const telemetry = RequestTelemetry.of(req);
    if (telemetry) telemetry.keyId = keyId(key);
    return true;
  }
}
