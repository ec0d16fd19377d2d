import { Injectable, Logger, OnApplicationShutdown, OnModuleInit, Inject } from '@nestjs/common';
import type { AuthConfig } from './auth.config';
import { ThrottlerStorage, ThrottlerStorageService } from '@nestjs/throttler';
import type { ThrottlerStorageRecord } from '@nestjs/throttler/dist/throttler-storage-record.interface';
import { ThrottlerStorageRedisService } from '@nest-lab/throttler-storage-redis';
import Redis from 'ioredis';
import { randomUUID } from 'node:crypto';
import { AppConfig } from '@app/common';
import { AuthErrorCode, AuthException } from './auth.exception';
import { AuthStatsService } from './auth-stats.service';
import { ModelLimits, Principal } from './key.types';
import { OutageMonitor } from './outage.monitor';

/** A Redis call slower than this counts as a failure (a hung Redis must not hang requests). */
export const REDIS_TIMEOUT_MS = 500;
/**
 * Concurrency leases expire unless renewed: a replica that dies without releasing frees its
 * leases after this long. Live leases are renewed every third of it.
 */
export const LEASE_MS = 60_000;

/** Token use of a key in the current window. */
export interface TokenWindow {
  readonly limit: number;
  /** Tokens charged, and reserved by requests still running. */
  readonly used: number;
  /** Seconds until the window (and its count) ends. */
  readonly resetSeconds: number;
}

/** A held concurrency slot; release it exactly once when the response ends. */
export interface Lease {
  readonly limit: number;
  readonly inFlight: number;
  release(): void;
}

/**
 * Tokens held in a key's window for work that is running: taken at admission (`reserve`), then
 * replaced by the real count (`settle`) or given back (`release`) when the work ends. Either call
 * ends the reservation; later calls do nothing. Neither throws: the work is already done.
 */
export interface TokenReservation {
  /** Tokens held. */
  readonly tokens: number;
  /** Replaces the reservation by what was really used (prompt + completion tokens). */
  settle(actual: number): Promise<void>;
  /** Gives the whole reservation back (nothing was used). */
  release(): Promise<void>;
}

/** The reservation of a key without a token limit: nothing is counted. */
const UNLIMITED: TokenReservation = { tokens: 0, settle: () => Promise.resolve(), release: () => Promise.resolve() };

// Token window: a hash {used, start} that lives RATE_LIMIT_WINDOW_MS from its first charge. `start`
// (Redis clock, ms) names the window, so that settling a reservation made in a window that has
// since ended does not take tokens off the next one.
const TOKENS_READ = `
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
return {used, redis.call('PTTL', KEYS[1])}`;
// ARGV: tokens, limit, window ms → {ok, used, pttl, start}
const TOKENS_RESERVE = `
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
local n = tonumber(ARGV[1])
if used + n > tonumber(ARGV[2]) then return {0, used, redis.call('PTTL', KEYS[1]), ''} end
local start = redis.call('HGET', KEYS[1], 'start')
if not start then
  local t = redis.call('TIME')
  start = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('HSET', KEYS[1], 'start', start)
end
used = redis.call('HINCRBY', KEYS[1], 'used', n)
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, used, redis.call('PTTL', KEYS[1]), start}`;
// ARGV: delta, window ms, reservation's window ('' for a plain charge), real count → used
const TOKENS_ADJUST = `
local start = redis.call('HGET', KEYS[1], 'start')
local delta = tonumber(ARGV[1])
if ARGV[3] ~= '' and start ~= ARGV[3] then delta = tonumber(ARGV[4]) end
if delta == 0 or (not start and delta < 0) then return 0 end
if not start then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'start', tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
end
local used = redis.call('HINCRBY', KEYS[1], 'used', delta)
if used < 0 then redis.call('HSET', KEYS[1], 'used', 0) used = 0 end
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return used`;
// Concurrency: a sorted set of lease ids scored by expiry (Redis clock, shared by replicas).
const LEASE_ACQUIRE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[1]) then return {0, n} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, n + 1}`;
const LEASE_RENEW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`;

interface MemoryWindow {
  used: number;
  readonly expiresAt: number;
  /** Names the window (its start), like the Redis hash's `start`. */
  readonly start: string;
}

interface LimitCommands {
  llmTokensRead(key: string): Promise<[number, number]>;
  llmTokensReserve(key: string, tokens: number, limit: number, windowMs: number): Promise<[number, number, number, string]>;
  llmTokensAdjust(key: string, delta: number, windowMs: number, start: string, actual: number): Promise<number>;
  llmLeaseAcquire(key: string, limit: number, lease: string, leaseMs: number): Promise<[number, number]>;
  llmLeaseRenew(key: string, leaseMs: number, ...leases: string[]): Promise<number>;
}

/**
 * Every counter behind the rate limits: request counts (as the ThrottlerStorage of
 * @nestjs/throttler), tokens per window and concurrent requests per key. With REDIS_URL the
 * counters live in Redis and are shared by every replica; otherwise in this process.
 *
 * When Redis fails, RATE_LIMIT_FAIL_MODE decides: `open` keeps serving and counts in this
 * replica's memory until Redis answers again; `closed` answers 503. Either way the failure is
 * logged and counted, and ioredis reconnects on its own: nothing needs a restart.
 */
@Injectable()
export class RateLimitService implements ThrottlerStorage, OnModuleInit, OnApplicationShutdown {
  readonly #logger = new Logger('RateLimit');
  readonly #redis: (Redis & LimitCommands) | null;
  readonly #redisThrottler: ThrottlerStorageRedisService | null;
  readonly #memoryThrottler = new ThrottlerStorageService();
  readonly #memoryTokens = new Map<string, MemoryWindow>();
  readonly #memoryLeases = new Map<string, Set<string>>();
  /** Redis leases held by this process, renewed until released: zset key → lease ids. */
  readonly #redisLeases = new Map<string, Set<string>>();
  readonly #outage: OutageMonitor;
  #renewTimer: NodeJS.Timeout | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;

  constructor(
    @Inject(AppConfig) private readonly config: AuthConfig,
    private readonly stats: AuthStatsService,
  ) {
    this.#outage = new OutageMonitor(
      'redis',
      stats,
      config.rateLimitFailMode === 'open'
        ? 'serving on, rate limits counted per replica in memory until it is back (RATE_LIMIT_FAIL_MODE=open)'
        : 'rate-limited routes answer 503 until it is back (RATE_LIMIT_FAIL_MODE=closed)',
    );
    if (!config.redisUrl) {
      this.#redis = null;
      this.#redisThrottler = null;
      return;
    }
    const redis = new Redis(config.redisUrl, {
      // Fail fast instead of queueing while disconnected: the fail mode decides, not a backlog.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: REDIS_TIMEOUT_MS,
      connectTimeout: 2000,
      retryStrategy: (times) => Math.min(100 * times, 1000),
      lazyConnect: true,
      // Applied by ioredis to every key, the throttler's and the scripts' included.
      keyPrefix: config.redisKeyPrefix,
    }) as Redis & LimitCommands;
    redis.defineCommand('llmTokensRead', { numberOfKeys: 1, lua: TOKENS_READ });
    redis.defineCommand('llmTokensReserve', { numberOfKeys: 1, lua: TOKENS_RESERVE });
    redis.defineCommand('llmTokensAdjust', { numberOfKeys: 1, lua: TOKENS_ADJUST });
    redis.defineCommand('llmLeaseAcquire', { numberOfKeys: 1, lua: LEASE_ACQUIRE });
    redis.defineCommand('llmLeaseRenew', { numberOfKeys: 1, lua: LEASE_RENEW });
    // Connection errors surface as failed calls (logged once per outage); without a listener
    // ioredis would print every reconnect attempt.
    redis.on('error', () => undefined);
    redis.on('ready', () => this.#outage.succeeded());
    this.#redis = redis;
    this.#redisThrottler = new ThrottlerStorageRedisService(redis);
  }

  async onModuleInit(): Promise<void> {
    this.#sweepTimer = setInterval(() => this.#sweepMemory(), Math.min(this.config.rateLimitWindowMs, 60_000));
    this.#sweepTimer.unref();
    if (!this.#redis) return;
    this.#renewTimer = setInterval(() => void this.#renewLeases(), LEASE_MS / 3);
    this.#renewTimer.unref();
    try {
      await this.#redis.connect();
      this.#logger.log('Rate-limit counters in Redis (shared by replicas)');
    } catch (err) {
      // Not fatal: ioredis keeps reconnecting and the fail mode covers the meantime.
      this.#outage.failed(err);
    }
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.#renewTimer);
    clearInterval(this.#sweepTimer);
    this.#memoryThrottler.onApplicationShutdown();
    if (!this.#redis) return;
    if (this.#redis.status === 'ready') await this.#redis.quit().catch(() => this.#redis?.disconnect());
    else this.#redis.disconnect();
  }

  /** Where counters live: `redis` or `memory`. */
  get backend(): 'redis' | 'memory' {
    return this.#redis ? 'redis' : 'memory';
  }

  /** ThrottlerStorage: request counts for @nestjs/throttler's guard. */
  increment(key: string, ttl: number, limit: number, blockDuration: number, throttlerName: string): Promise<ThrottlerStorageRecord> {
    return this.#use(
      () => this.#redisThrottler!.increment(key, ttl, limit, blockDuration, throttlerName),
      async () => this.#memoryThrottler.increment(key, ttl, limit, blockDuration, throttlerName),
    );
  }

  /** The key's token window, or null when it has no token limit. */
  async tokenWindow(principal: Principal): Promise<TokenWindow | null> {
    const limit = principal.limits.tpm;
    if (limit <= 0) return null;
    const key = this.#key('tpmw', principal.id);
    const [used, pttl] = await this.#use(
      () => this.#redis!.llmTokensRead(key),
      async () => {
        const entry = this.#memoryWindow(key);
        return entry ? [entry.used, entry.expiresAt - Date.now()] : [0, -2];
      },
    );
    const resetMs = pttl > 0 ? pttl : this.config.rateLimitWindowMs;
    return { limit, used, resetSeconds: Math.ceil(resetMs / 1000) };
  }

  /**
   * Holds `tokens` (a request's prompt + max_tokens, or the count of an upload) in the key's
   * window before the work starts, so that parallel requests cannot together spend more than the
   * key's tokens per window: each is admitted only while the window can hold what it may use.
   * Throws a 429 `token_rate_limit_exceeded` when it cannot (with Retry-After until the window
   * ends, or none when the request alone is larger than the limit). A key without a token limit
   * gets a reservation that counts nothing. Settle or release the reservation when the work ends.
   */
  async reserve(principal: Principal | undefined, tokens: number): Promise<TokenReservation> {
    const limit = principal?.limits.tpm ?? 0;
    if (!principal || limit <= 0) return UNLIMITED;
    const n = Math.max(0, Math.round(tokens));
    const key = this.#key('tpmw', principal.id);
    const windowMs = this.config.rateLimitWindowMs;
    const where = { redis: false };
    const [ok, used, pttl, start] = await this.#use(
      async () => {
        const r = await this.#redis!.llmTokensReserve(key, n, limit, windowMs);
        where.redis = true;
        return r;
      },
      async (): Promise<[number, number, number, string]> => {
        const now = Date.now();
        const entry = this.#memoryWindow(key);
        const current = entry?.used ?? 0;
        if (current + n > limit) return [0, current, entry ? entry.expiresAt - now : -2, ''];
        const window = entry ?? { used: 0, expiresAt: now + windowMs, start: `${now}:${randomUUID()}` };
        window.used += n;
        this.#memoryTokens.set(key, window);
        return [1, window.used, window.expiresAt - now, window.start];
      },
    );
    if (!ok) {
      const resetSeconds = Math.max(1, Math.ceil((pttl > 0 ? pttl : windowMs) / 1000));
      const headers: Record<string, string> = {
        'X-RateLimit-Limit-Tokens': String(limit),
        'X-RateLimit-Remaining-Tokens': String(Math.max(0, limit - used)),
        'X-RateLimit-Reset-Tokens': String(resetSeconds),
      };
      this.stats.rejected(AuthErrorCode.TokensRateLimited, 'key_tokens');
      if (n > limit) {
        throw new AuthException(
          AuthErrorCode.TokensRateLimited,
          `This request may use up to ${n} tokens, more than this API key's limit of ${limit} tokens per ` +
            `${Math.round(windowMs / 1000)} s; lower max_tokens (or send less text)`,
          { headers },
        );
      }
      throw new AuthException(
        AuthErrorCode.TokensRateLimited,
        `Token rate limit reached for this API key: ${used} of ${limit} tokens used or held by running requests in the ` +
          `current window, and this request may use up to ${n}; retry in ${resetSeconds} s or lower max_tokens`,
        { headers: { ...headers, 'Retry-After': String(resetSeconds) } },
      );
    }
    let ended = false;
    const end = async (actual: number): Promise<void> => {
      if (ended) return;
      ended = true;
      const real = Math.max(0, Math.round(actual));
      await this.#adjust(key, real - n, start, real, where.redis);
    };
    return { tokens: n, settle: (actual) => end(actual), release: () => end(0) };
  }

  /**
   * Adds tokens to the key's window after the fact (work that was not reserved). Never throws:
   * the work is already served.
   */
  async charge(principal: Principal | undefined, tokens: number): Promise<void> {
    if (!principal || principal.limits.tpm <= 0 || !(tokens > 0)) return;
    const real = Math.round(tokens);
    await this.#adjust(this.#key('tpmw', principal.id), real, '', real, this.#redis !== null);
  }

  /**
   * Moves a window's count by `delta`, or, when the reservation's window (`start`) has ended,
   * charges the real count to the current one. `redis`: where the reservation was made (one taken
   * in memory while Redis was down is settled in memory). Never throws.
   */
  async #adjust(key: string, delta: number, start: string, actual: number, redis: boolean): Promise<void> {
    const windowMs = this.config.rateLimitWindowMs;
    const memory = async (): Promise<number> => {
      const now = Date.now();
      const entry = this.#memoryWindow(key);
      const amount = start !== '' && entry?.start !== start ? actual : delta;
      if (amount === 0 || (!entry && amount < 0)) return 0;
      const window = entry ?? { used: 0, expiresAt: now + windowMs, start: `${now}:${randomUUID()}` };
      window.used = Math.max(0, window.used + amount);
      this.#memoryTokens.set(key, window);
      return window.used;
    };
    try {
      if (!redis) await memory();
      else await this.#use(() => this.#redis!.llmTokensAdjust(key, delta, windowMs, start, actual), memory);
    } catch {
      // Fail-closed and Redis down: the failure is logged and counted; the tokens go uncounted.
    }
  }

  #memoryWindow(key: string): MemoryWindow | undefined {
    const entry = this.#memoryTokens.get(key);
    if (entry && entry.expiresAt > Date.now()) return entry;
    if (entry) this.#memoryTokens.delete(key);
    return undefined;
  }

  /**
   * Takes one of the key's concurrency slots; null when the key has no concurrency limit.
   * Throws a 429 when all are taken.
   */
  acquire(principal: Principal): Promise<Lease | null> {
    const limit = principal.limits.concurrency;
    return this.acquireSlot(principal, 'conc', limit, `Too many concurrent requests for this API key (limit ${limit}); retry when one finishes`);
  }

  /**
   * Takes one of `limit` slots of kind `kind` (`conc` for requests, `upload` for document uploads)
   * for the key, shared by every replica with Redis; null when `limit` is 0 (unlimited). Throws a
   * 429 `concurrency_limit_exceeded` with `message` when all are taken.
   */
  async acquireSlot(principal: Principal, kind: string, limit: number, message: string): Promise<Lease | null> {
    if (limit <= 0) return null;
    const key = this.#key(kind, principal.id);
    const lease = randomUUID();
    const taken = { where: 'memory' as 'redis' | 'memory' };
    const [ok, inFlight] = await this.#use(
      async () => {
        const r = await this.#redis!.llmLeaseAcquire(key, limit, lease, LEASE_MS);
        taken.where = 'redis';
        return r;
      },
      async () => {
        const held = this.#memoryLeases.get(key) ?? new Set<string>();
        if (held.size >= limit) return [0, held.size];
        held.add(lease);
        this.#memoryLeases.set(key, held);
        return [1, held.size];
      },
    );
    if (!ok) {
      throw new AuthException(AuthErrorCode.ConcurrencyLimited, message, {
        headers: { 'Retry-After': '1', 'X-Concurrency-Limit': String(limit) },
      });
    }
    if (taken.where === 'redis') this.#track(key, lease);
    let released = false;
    return {
      limit,
      inFlight,
      release: () => {
        if (released) return;
        released = true;
        if (taken.where === 'memory') {
          const held = this.#memoryLeases.get(key);
          held?.delete(lease);
          if (held?.size === 0) this.#memoryLeases.delete(key);
          return;
        }
        this.#untrack(key, lease);
        // A release that fails is not retried: the lease expires by itself within LEASE_MS.
        this.#redis?.zrem(key, lease).catch((err: unknown) => this.#outage.failed(err));
      },
    };
  }

  /**
   * A request of the key on a model, against the key's limits on that model (`keys create
   * --model-rpm / --model-tpm`): counts it in the model's request window and refuses it (429)
   * when that window is full or the model's tokens for the window are spent. `model` is the
   * model's id (aliases share its counters).
   */
  async admitModel(principal: Principal | undefined, model: string, limits: ModelLimits | null): Promise<void> {
    if (!principal || !limits) return;
    const windowMs = this.config.rateLimitWindowMs;
    if (limits.rpm > 0) {
      const r = await this.increment(`rl:key:${principal.id}:model:${model}`, windowMs, limits.rpm, windowMs, 'model');
      if (r.isBlocked) {
        const retryAfter = Math.max(1, r.timeToBlockExpire);
        this.stats.rejected(AuthErrorCode.RequestsRateLimited, 'key_requests');
        throw new AuthException(
          AuthErrorCode.RequestsRateLimited,
          `Rate limit reached for this API key on model ${model}: ${limits.rpm} requests per ${Math.round(windowMs / 1000)} s; retry in ${retryAfter} s`,
          { headers: { 'Retry-After': String(retryAfter) } },
        );
      }
    }
    if (limits.tpm > 0) {
      const key = this.#key('tpmw', `${principal.id}:model:${model}`);
      const [used, pttl] = await this.#use(
        () => this.#redis!.llmTokensRead(key),
        async () => {
          const entry = this.#memoryWindow(key);
          return entry ? [entry.used, entry.expiresAt - Date.now()] : [0, -2];
        },
      );
      if (used >= limits.tpm) {
        const reset = Math.ceil((pttl > 0 ? pttl : windowMs) / 1000);
        this.stats.rejected(AuthErrorCode.TokensRateLimited, 'key_tokens');
        throw new AuthException(
          AuthErrorCode.TokensRateLimited,
          `Token rate limit reached for this API key on model ${model}: ${used} of ${limits.tpm} tokens used in the current window; retry in ${reset} s`,
          { headers: { 'Retry-After': String(reset) } },
        );
      }
    }
  }

  /** Adds a finished request's tokens to the key's window on that model (when it has a token limit there). Never throws. */
  async chargeModel(principal: Principal | undefined, model: string, limits: ModelLimits | null, tokens: number): Promise<void> {
    if (!principal || !limits || limits.tpm <= 0 || !(tokens > 0)) return;
    const real = Math.round(tokens);
    await this.#adjust(this.#key('tpmw', `${principal.id}:model:${model}`), real, '', real, this.#redis !== null);
  }

  /** Runs the Redis variant, or the memory one without Redis; on failure applies the fail mode. */
  async #use<T>(redisOp: () => Promise<T>, memoryOp: () => Promise<T>): Promise<T> {
    if (!this.#redis) return memoryOp();
    try {
      if (this.#redis.status !== 'ready') throw new Error(`connection ${this.#redis.status}`);
      const result = await redisOp();
      this.#outage.succeeded();
      return result;
    } catch (err) {
      this.#outage.failed(err);
      if (this.config.rateLimitFailMode === 'open') return memoryOp();
      throw new AuthException(AuthErrorCode.RateLimiterUnavailable, 'Rate limiting is unavailable; retry shortly', {
        headers: { 'Retry-After': '1' },
        cause: err,
      });
    }
  }

  #key(kind: string, id: string): string {
    return `${kind}:${id}`;
  }

  #track(key: string, lease: string): void {
    const held = this.#redisLeases.get(key) ?? new Set<string>();
    held.add(lease);
    this.#redisLeases.set(key, held);
  }

  #untrack(key: string, lease: string): void {
    const held = this.#redisLeases.get(key);
    held?.delete(lease);
    if (held?.size === 0) this.#redisLeases.delete(key);
  }

  async #renewLeases(): Promise<void> {
    if (!this.#redis || this.#redis.status !== 'ready') return;
    for (const [key, leases] of this.#redisLeases) {
      await this.#redis.llmLeaseRenew(key, LEASE_MS, ...leases).catch((err: unknown) => this.#outage.failed(err));
    }
  }

  #sweepMemory(): void {
    const now = Date.now();
    for (const [key, entry] of this.#memoryTokens) if (entry.expiresAt <= now) this.#memoryTokens.delete(key);
  }
}
