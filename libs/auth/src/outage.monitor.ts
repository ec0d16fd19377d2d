import { Logger } from '@nestjs/common';
import { AuthStatsService, Backend } from './auth-stats.service';

/** Longest silence while a backend keeps failing: one reminder line per interval, not one per request. */
const REMINDER_MS = 30_000;

/**
 * Logs a backend outage once when it starts, a reminder while it lasts, and once when it ends,
 * and counts every failure in the stats.
 */
export class OutageMonitor {
  readonly #logger: Logger;
  #down = false;
  #since = 0;
  #failures = 0;
  #lastLog = 0;

  constructor(
    private readonly backend: Backend,
    private readonly stats: AuthStatsService,
    private readonly consequence: string,
  ) {
    this.#logger = new Logger(backend === 'redis' ? 'RateLimit' : 'KeyStore');
  }

  get down(): boolean {
    return this.#down;
  }

  failed(err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    this.stats.failed(this.backend, error);
    this.#failures++;
    const now = Date.now();
    if (!this.#down) {
      this.#down = true;
      this.#since = now;
      this.#lastLog = now;
      this.#logger.error(`${this.backend} unavailable (${error.message}): ${this.consequence}`);
    } else if (now - this.#lastLog >= REMINDER_MS) {
      this.#lastLog = now;
      this.#logger.error(`${this.backend} still unavailable after ${Math.round((now - this.#since) / 1000)} s, ${this.#failures} failed calls (${error.message})`);
    }
  }

  succeeded(): void {
    if (!this.#down) return;
    this.#logger.log(`${this.backend} is back after ${Math.round((Date.now() - this.#since) / 1000)} s (${this.#failures} failed calls)`);
    this.#down = false;
    this.#failures = 0;
    this.stats.recovered(this.backend);
  }
}
