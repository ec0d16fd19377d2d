import { Injectable, Logger, OnApplicationShutdown, OnModuleInit, Inject } from '@nestjs/common';
import type { ResponseStoreConfig } from './response-store.config';
import { AppConfig } from '@app/common';
import { ResponseRepository } from './response.repository';
import { StoredResponse } from './response-store.types';

/** How often expired responses are deleted (at most; a shorter retention prunes as often as it lasts). */
const PRUNE_INTERVAL_MS = 3_600_000;

/**
 * Stored Responses API responses, scoped to the key that made them and kept for
 * RESPONSES_RETENTION_SECONDS: reads never see an expired one, and expired rows are deleted in the
 * background (hourly, and at start).
 */
@Injectable()
export class ResponseStoreService implements OnModuleInit, OnApplicationShutdown {
  readonly #logger = new Logger('ResponseStore');
  #timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly repo: ResponseRepository,
    @Inject(AppConfig) private readonly config: ResponseStoreConfig,
  ) {}

  onModuleInit(): void {
    const every = Math.min(PRUNE_INTERVAL_MS, this.config.responsesRetentionSeconds * 1000);
    this.#timer = setInterval(() => void this.prune(), every);
    this.#timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.repo.close().catch(() => undefined);
  }

  /** Stores a response made now by `keyId`; it expires RESPONSES_RETENTION_SECONDS later. */
  async save(response: Omit<StoredResponse, 'createdAt' | 'expiresAt'>, createdAt = Date.now()): Promise<void> {
    await this.repo.ready();
    await this.repo.insert({ ...response, createdAt, expiresAt: createdAt + this.config.responsesRetentionSeconds * 1000 });
  }

  /** The key's unexpired response, or null (another key's response is null too). */
  async find(id: string, keyId: string): Promise<StoredResponse | null> {
    await this.repo.ready();
    return this.repo.find(id, keyId, Date.now());
  }

  async delete(id: string, keyId: string): Promise<boolean> {
    await this.repo.ready();
    return this.repo.delete(id, keyId, Date.now());
  }

  /** Deletes expired responses; failures are logged and retried at the next run. */
  async prune(): Promise<number> {
    try {
      await this.repo.ready();
      const deleted = await this.repo.prune(Date.now());
      if (deleted > 0) this.#logger.log(`Deleted ${deleted} expired stored responses`);
      return deleted;
    } catch (err) {
      this.#logger.warn(`Pruning stored responses failed: ${(err as Error).message}`);
      return 0;
    }
  }
}
