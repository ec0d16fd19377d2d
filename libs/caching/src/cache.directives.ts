import { createParamDecorator, ExecutionContext } from '@nestjs/common';
import type { IncomingHttpHeaders } from 'node:http';
import type { Request } from 'express';
import { CachingErrorCode, CachingException } from './caching.exception';
import type { CacheDirectives } from './caching.types';

function header(headers: IncomingHttpHeaders, name: string): string {
  const value = headers[name];
  return (Array.isArray(value) ? value.join(',') : (value ?? '')).trim();
}

/**
 * Reads the request's cache instructions: `Cache-Control` (`no-cache`: skip the lookup,
 * `no-store`: do not store; other directives are ignored, as RFC 9111 lets a cache do) and
 * `X-Cache-Sampled: true|false` (cache a sampled request, or not, whatever CACHE_SAMPLED says).
 */
export function parseCacheDirectives(headers: IncomingHttpHeaders): CacheDirectives {
  const directives = header(headers, 'cache-control')
    .toLowerCase()
    .split(',')
    .map((d) => d.trim().split('=')[0].trim());
  const sampledRaw = header(headers, 'x-cache-sampled').toLowerCase();
  let sampled: boolean | undefined;
  if (sampledRaw === 'true' || sampledRaw === '1') sampled = true;
  else if (sampledRaw === 'false' || sampledRaw === '0') sampled = false;
  else if (sampledRaw !== '') {
    throw new CachingException(
      CachingErrorCode.InvalidDirective,
      `X-Cache-Sampled must be true or false (got ${JSON.stringify(sampledRaw.slice(0, 32))})`,
      { param: 'X-Cache-Sampled' },
    );
  }
  return { noCache: directives.includes('no-cache'), noStore: directives.includes('no-store'), sampled };
}

/**
 * Injects the request's {@link CacheDirectives}, with the caller's key id (the `principal` that the
 * auth guard attached; read by shape, since this library does not depend on the auth one).
 */
export const CacheDirectivesParam = createParamDecorator((_: unknown, ctx: ExecutionContext): CacheDirectives => {
  const req = ctx.switchToHttp().getRequest<Request & { principal?: { id?: unknown } }>();
  const caller = typeof req.principal?.id === 'string' ? req.principal.id : undefined;
  return { ...parseCacheDirectives(req.headers), caller };
});
