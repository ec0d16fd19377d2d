import { MigratedStore } from '@app/common';
import { StoredResponse } from './response-store.types';

/**
 * Where stored responses live: the key store's database (SQLite file by default, PostgreSQL with
 * DATABASE_URL), in a table of their own. Both implementations pass the same contract suite.
 * Reads never return a response of another key or one past its expiry. Methods reject when the
 * database cannot be reached.
 */
export abstract class ResponseRepository extends MigratedStore {
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
