import { StoredResponse } from './response-store.types';

/**
 * Where stored responses live: the key store's database (SQLite file by default, PostgreSQL with
 * DATABASE_URL), in a table of their own. Both implementations pass the same contract suite.
 * Reads never return a response of another key or one past its expiry. Methods reject when the
 * database cannot be reached.
 */
export abstract class ResponseRepository {
  #ready: Promise<void> | null = null;

  /** Resolves once the table is current (migrates once; a failed attempt is retried on the next call). */
  ready(): Promise<void> {
    this.#ready ??= this.migrate().catch((err: unknown) => {
      this.#ready = null;
      throw err;
    });
    return this.#ready;
  }

  /** `sqlite:<file>` or `postgres:<schema>`: for logs, never credentials. */
  abstract readonly description: string;
  /** Creates or upgrades the table; safe to run concurrently from several processes. */
  abstract migrate(): Promise<void>;
  /** Stores a new response (ids are never reused). */
  abstract insert(response: StoredResponse): Promise<void>;
  /** The key's response with that id, unless it expired before `now` (epoch ms). */
  abstract find(id: string, keyId: string, now: number): Promise<StoredResponse | null>;
  /** Deletes the key's response; false when there was none (or it had expired). */
  abstract delete(id: string, keyId: string, now: number): Promise<boolean>;
  /** Deletes every response that expired before `now`; returns how many. */
  abstract prune(now: number): Promise<number>;
  abstract close(): Promise<void>;
}
