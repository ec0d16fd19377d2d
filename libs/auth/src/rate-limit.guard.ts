import { ExecutionContext, Injectable, Logger } from '@nestjs/common';
import type { AuthConfig } from './auth.config';
import { Reflector } from '@nestjs/core';
import {
  InjectThrottlerOptions,
  InjectThrottlerStorage,
  ThrottlerGuard,
  ThrottlerStorage,
} from '@nestjs/throttler';
import type { ThrottlerModuleOptions, ThrottlerOptions, ThrottlerRequest } from '@nestjs/throttler';
import type { Request, Response } from 'express';
import { AppConfig, debugEnabled } from '@app/common';
import { AuthErrorCode, AuthException } from './auth.exception';
import { AuthStatsService } from './auth-stats.service';
import { AuthenticatedRequest, principalOf } from './principal.decorator';
import { RateLimitService } from './rate-limit.service';

/** One limit's state as the response headers report it. */
interface Window {
  readonly limit: number;
  readonly remaining: number;
  /** Seconds until the window resets. */
  readonly reset: number;
}

const REQUEST_WINDOWS = Symbol('rate-limit:requests');
type WithWindows = Request & { [REQUEST_WINDOWS]?: Window[] };

function headers(kind: 'Requests' | 'Tokens', w: Window): Record<string, string> {
  const h: Record<string, string> = {
    [`X-RateLimit-Limit-${kind}`]: String(w.limit),
    [`X-RateLimit-Remaining-${kind}`]: String(w.remaining),
    [`X-RateLimit-Reset-${kind}`]: String(w.reset),
  };
  if (kind === 'Requests') {
    h['X-RateLimit-Limit'] = String(w.limit);
    h['X-RateLimit-Remaining'] = String(w.remaining);
    h['X-RateLimit-Reset'] = String(w.reset);
  }
  return h;
}

/** True for requests answered as a stream: the `/stream` route or a body with `stream: true`. */
export function isStreaming(req: Request): boolean {
  return req.path.endsWith('/stream') || (typeof req.body === 'object' && req.body !== null && req.body.stream === true);
}

/**
 * The throttlers, for @nestjs/throttler: per client IP (per route; streaming requests have their
 * own lower limit, as in the seed) and per key (its requests-per-window, across routes). A limit
 * of 0 turns a throttler off for the request.
 */
export function throttlerOptions(config: AuthConfig, storage: ThrottlerStorage): ThrottlerModuleOptions {
  // REDIS_KEY_PREFIX is added by the Redis client to every key.
  const prefix = 'rl:';
  const route = (ctx: ExecutionContext): string => `${ctx.getClass().name}.${ctx.getHandler().name}`;
  const request = (ctx: ExecutionContext): Request => ctx.switchToHttp().getRequest<Request>();
  const throttlers: ThrottlerOptions[] = [
    {
      name: 'ip',
      ttl: config.rateLimitWindowMs,
      limit: (ctx) => (isStreaming(request(ctx)) ? config.rateLimitIpStreamRpm : config.rateLimitIpRpm),
      generateKey: (ctx, tracker) => `${prefix}ip:${route(ctx)}:${isStreaming(request(ctx)) ? 'stream' : 'call'}:${tracker}`,
    },
    {
      name: 'key',
      ttl: config.rateLimitWindowMs,
      limit: (ctx) => principalOf(request(ctx))?.limits.rpm ?? 0,
      getTracker: (req) => principalOf(req as Request)?.id ?? '',
      generateKey: (_ctx, tracker) => `${prefix}key:${tracker}`,
    },
  ];
  // The guard sets the headers itself, under OpenAI's names (…-Requests, …-Tokens).
  return { throttlers, storage, setHeaders: false };
}

/**
 * Enforces, after the ApiKeyGuard: requests per IP and per key (through @nestjs/throttler),
 * the key's tokens per window (charged by the services when a response's usage is known, so
 * a request is refused once the window's tokens are spent) and the key's concurrent requests
 * (held until the response finishes or the client goes away). Sets X-RateLimit-* headers for
 * requests and tokens on every response, and refuses with a 429 envelope and Retry-After.
 * Client IPs come from Express's `req.ip`, which believes X-Forwarded-For only from
 * TRUSTED_PROXIES.
 */
@Injectable()
export class RateLimitGuard extends ThrottlerGuard {
  readonly #log = new Logger('RateLimit');

  constructor(
    @InjectThrottlerOptions() options: ThrottlerModuleOptions,
    @InjectThrottlerStorage() storage: ThrottlerStorage,
    reflector: Reflector,
    private readonly limits: RateLimitService,
    private readonly stats: AuthStatsService,
  ) {
    super(options, storage, reflector);
  }

  override async canActivate(context: ExecutionContext): Promise<boolean> {
    const req = context.switchToHttp().getRequest<AuthenticatedRequest & WithWindows>();
    const res = context.switchToHttp().getResponse<Response>();
    const principal = req.principal;
    if (!principal) return true; // public route: nothing to count
    await super.canActivate(context);
    const out: Record<string, string> = {};
    const windows = req[REQUEST_WINDOWS] ?? [];
    if (windows.length > 0) Object.assign(out, headers('Requests', windows.reduce((a, b) => (b.remaining < a.remaining ? b : a))));
    const tokens = await this.limits.tokenWindow(principal);
    if (tokens) {
      const w = { limit: tokens.limit, remaining: Math.max(0, tokens.limit - tokens.used), reset: tokens.resetSeconds };
      Object.assign(out, headers('Tokens', w));
      if (debugEnabled()) this.#log.debug(`${tokens.used >= tokens.limit ? 'refused' : 'allowed'} by token limit (key ${principal.id}): ${tokens.used}/${tokens.limit} tokens used`);
      if (tokens.used >= tokens.limit) {
        this.stats.rejected(AuthErrorCode.TokensRateLimited, 'key_tokens');
        throw new AuthException(
          AuthErrorCode.TokensRateLimited,
          `Token rate limit reached for this API key: ${tokens.used} of ${tokens.limit} tokens used in the current window; retry in ${tokens.resetSeconds} s`,
          { headers: { ...out, 'Retry-After': String(tokens.resetSeconds) } },
        );
      }
    }
    let lease;
    try {
      lease = await this.limits.acquire(principal);
    } catch (err) {
      if (err instanceof AuthException && err.code === AuthErrorCode.ConcurrencyLimited) {
        this.stats.rejected(err.code, 'key_concurrency');
        throw new AuthException(err.code, err.message, { headers: { ...out, ...err.headers } });
      }
      throw err;
    }
    if (lease) {
      // 'close' also fires after 'finish'; either way the slot is given back once.
      res.once('finish', lease.release);
      res.once('close', lease.release);
    }
    res.set(out);
    return true;
  }

  protected override async handleRequest(props: ThrottlerRequest): Promise<boolean> {
    const { context, limit, ttl, throttler, blockDuration, getTracker, generateKey } = props;
    if (limit <= 0) return true;
    const req = context.switchToHttp().getRequest<WithWindows>();
    const name = throttler.name ?? 'default';
    const tracker = await getTracker(req, context);
    const key = generateKey(context, tracker, name);
    const r = await this.storageService.increment(key, ttl, limit, blockDuration, name);
    const window: Window = { limit, remaining: Math.max(0, limit - r.totalHits), reset: r.timeToExpire };
    (req[REQUEST_WINDOWS] ??= []).push(window);
    if (debugEnabled()) {
      // The tracker is a client address or a key id (never the key itself).
      this.#log.debug(`${r.isBlocked ? 'refused' : 'allowed'} by ${name} limit (${name === 'ip' ? `client ${tracker}` : `key ${tracker}`}): ${r.totalHits}/${limit} requests in the window, resets in ${r.timeToExpire} s`);
    }
    if (r.isBlocked) {
      const retryAfter = Math.max(1, r.timeToBlockExpire);
      const who = name === 'ip' ? 'this client address' : 'this API key';
      this.stats.rejected(AuthErrorCode.RequestsRateLimited, name === 'ip' ? 'ip_requests' : 'key_requests');
      throw new AuthException(
        AuthErrorCode.RequestsRateLimited,
        `Rate limit reached for ${who}: ${limit} requests per ${Math.round(ttl / 1000)} s; retry in ${retryAfter} s`,
        { headers: { ...headers('Requests', { limit, remaining: 0, reset: retryAfter }), 'Retry-After': String(retryAfter) } },
      );
    }
    return true;
  }
}
