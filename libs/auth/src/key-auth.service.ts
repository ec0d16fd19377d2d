import { Injectable, Logger, OnModuleDestroy, OnModuleInit, Inject } from '@nestjs/common';
import type { AuthConfig } from './auth.config';
import { AppConfig, debugEnabled } from '@app/common';
import { ApiKeysService } from './api-keys.service';
import { AuthErrorCode, AuthException } from './auth.exception';
import { AuthStatsService } from './auth-stats.service';
import { KeyRepository } from './key.repository';
import { ApiKeyRecord, hashKey, keyStatus, Principal, SCOPES } from './key.types';
import { OutageMonitor } from './outage.monitor';

/** Last-used times are written in batches this often (and at shutdown), not per request. */
export const LAST_USED_FLUSH_MS = 10_000;
/** Cached lookups kept at most (oldest evicted): bounds memory under a flood of random keys. */
const CACHE_MAX = 10_000;

interface CacheEntry {
  readonly record: ApiKeyRecord | null;
  readonly checkedAt: number;
}

export function principalOfRecord(record: ApiKeyRecord): Principal {
  return {
    id: record.id,
    name: record.name,
    scopes: record.scopes,
    limits: record.limits,
    budget: record.budget,
    models: record.models,
    modelLimits: record.modelLimits,
    priority: record.priority,
    source: 'store',
  };
}

/**
 * Turns a presented secret into a Principal: static keys (API_KEYS, hashed at start) first, then
 * the store through a short cache (KEY_CACHE_TTL_MS). Last-used times are collected in memory
 * and flushed in batches so that the hot path never writes. When the store fails,
 * KEY_STORE_FAIL_MODE decides: `closed` refuses keys it cannot check (503), `open` keeps
 * serving keys this process has already verified, with their last known scopes and limits.
 */
@Injectable()
export class KeyAuthService implements OnModuleInit, OnModuleDestroy {
  readonly #logger = new Logger('Auth');
  readonly #static = new Map<string, Principal>();
  readonly #cache = new Map<string, CacheEntry>();
  #lastUsed = new Map<string, Date>();
  #timer: NodeJS.Timeout | undefined;
  readonly #outage: OutageMonitor;

  constructor(
    private readonly keys: ApiKeysService,
    private readonly repo: KeyRepository,
    @Inject(AppConfig) private readonly config: AuthConfig,
    stats: AuthStatsService,
  ) {
    this.#outage = new OutageMonitor(
      'key_store',
      stats,
      config.keyStoreFailMode === 'open'
        ? 'keys already verified by this replica keep working, other keys get 503 until it is back'
        : 'keys not in the cache get 503 until it is back (KEY_STORE_FAIL_MODE=closed)',
    );
  }

  async onModuleInit(): Promise<void> {
    this.config.apiKeys.forEach((key, i) => {
      const hash = hashKey(key);
      this.#static.set(hash, {
        id: `static:${hash.slice(0, 12)}`,
        name: `API_KEYS[${i}]`,
        scopes: [...SCOPES],
        limits: this.config.keyDefaults,
        priority: 'normal',
        source: 'static',
      });
    });
    if (this.config.authDisabled) {
      const open = this.config.authDisabledScopes;
      const closed = SCOPES.filter((s) => !open.includes(s));
      this.#logger.warn(
        `AUTH_DISABLED=true: routes that need only the scope(s) ${open.join(', ')} accept requests without a key` +
          (closed.length ? `; routes that need ${closed.join(' or ')} still need a key with it (AUTH_DISABLED_SCOPES)` : '; every route is open (AUTH_DISABLED_SCOPES)'),
      );
    }
    try {
      await this.keys.ready();
      const active = (await this.repo.list()).filter((k) => keyStatus(k) === 'active').length;
      this.#logger.log(`Key store ${this.repo.description}: ${active} active key(s), ${this.#static.size} static key(s)`);
      if (active === 0 && this.#static.size === 0 && !this.config.authDisabled) {
        this.#logger.warn('No API key exists yet: create one with `npm run cli -- keys create --name me` (same DATA_DIR/DATABASE_URL)');
      }
    } catch (err) {
      // A local file that cannot be opened is a setup error; a database that is down may come back.
      if (!this.config.databaseUrl) throw err;
      this.#outage.failed(err);
    }
    this.#timer = setInterval(() => void this.flushLastUsed(), LAST_USED_FLUSH_MS);
    this.#timer.unref();
  }

  async onModuleDestroy(): Promise<void> {
    clearInterval(this.#timer);
    await this.flushLastUsed();
  }

  get disabled(): boolean {
    return this.config.authDisabled;
  }

  /** The principal for a secret, or an AuthException (401 unknown/revoked/expired, 503 store down). */
  async authenticate(secret: string): Promise<Principal> {
    const hash = hashKey(secret);
    const fixed = this.#static.get(hash);
    if (fixed) {
      if (debugEnabled()) this.#logger.debug(`key lookup: static key ${fixed.id}`);
      return fixed;
    }
    const now = Date.now();
    const cached = this.#cache.get(hash);
    let record: ApiKeyRecord | null;
    // Debug lines name the key's id and prefix-free outcome, never the key or its hash.
    let source = 'cache';
    if (cached && now - cached.checkedAt < this.config.keyCacheTtlMs) {
      record = cached.record;
    } else {
      source = this.repo.description.split(':')[0];
      try {
        await this.keys.ready();
        record = await this.repo.findByHash(hash);
        this.#outage.succeeded();
        this.#remember(hash, { record, checkedAt: now });
      } catch (err) {
        this.#outage.failed(err);
        if (this.config.keyStoreFailMode === 'open' && cached?.record) {
          record = cached.record;
          source = 'stale cache (store down, KEY_STORE_FAIL_MODE=open)';
        } else {
          throw new AuthException(AuthErrorCode.KeyStoreUnavailable, 'The API key store is unavailable; retry shortly', {
            headers: { 'Retry-After': '5' },
            cause: err,
          });
        }
      }
    }
    const status = record ? keyStatus(record, now) : 'unknown';
    if (debugEnabled()) this.#logger.debug(`key lookup (${source}): ${record ? `key ${record.id} ${status}` : 'no such key'}`);
    if (!record) throw new AuthException(AuthErrorCode.InvalidKey, 'Invalid API key');
    if (status === 'revoked') throw new AuthException(AuthErrorCode.RevokedKey, 'This API key has been revoked');
    if (status === 'expired') throw new AuthException(AuthErrorCode.ExpiredKey, `This API key expired at ${record.expiresAt?.toISOString()}`);
    this.#lastUsed.set(record.id, new Date(now));
    return principalOfRecord(record);
  }

  /** Writes collected last-used times; on failure they are kept for the next flush. */
  async flushLastUsed(): Promise<void> {
    if (this.#lastUsed.size === 0) return;
    const batch = this.#lastUsed;
    this.#lastUsed = new Map();
    try {
      await this.repo.touch(batch);
    } catch (err) {
      for (const [id, at] of batch) if (!this.#lastUsed.has(id)) this.#lastUsed.set(id, at);
      this.#logger.warn(`Could not record last-used times (${(err as Error).message}); will retry`);
    }
  }

  #remember(hash: string, entry: CacheEntry): void {
    this.#cache.delete(hash);
    this.#cache.set(hash, entry);
    if (this.#cache.size > CACHE_MAX) this.#cache.delete(this.#cache.keys().next().value as string);
  }
}
