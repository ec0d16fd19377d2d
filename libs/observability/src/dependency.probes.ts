import { Inject, Injectable, Logger, OnApplicationShutdown } from '@nestjs/common';
import type { ObservabilityConfig } from './observability.config';
import { Redis } from 'ioredis';
import { Client } from 'pg';
import { AppConfig } from '@app/common';

/** The result of asking a dependency whether it answers. */
export interface ProbeResult {
  readonly up: boolean;
  readonly latencyMs: number;
  /** Why it is down (never contains credentials). */
  readonly error?: string;
}

export type DependencyName = 'redis' | 'database';

/** A dependency that readiness and `llm_dependency_up` check. */
export interface DependencyProbe {
  readonly name: DependencyName;
  check(): Promise<ProbeResult>;
  close(): Promise<void>;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function timed(fn: () => Promise<unknown>): Promise<ProbeResult> {
  const started = performance.now();
  try {
    await fn();
    return { up: true, latencyMs: Math.round((performance.now() - started) * 10) / 10 };
  } catch (err) {
    return { up: false, latencyMs: Math.round((performance.now() - started) * 10) / 10, error: (err as Error).message };
  }
}

/** PING over one dedicated connection that ioredis keeps reconnecting in the background. */
export class RedisProbe implements DependencyProbe {
  readonly name = 'redis';
  readonly #client: Redis;

  constructor(url: string, private readonly timeoutMs: number) {
    this.#client = new Redis(url, {
      lazyConnect: true,
      connectionName: 'llm-health',
      // A check must fail fast while Redis is down, not queue behind reconnection attempts.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: timeoutMs,
      retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
    });
    // Errors surface through check(); without a listener ioredis would print each reconnect failure.
    this.#client.on('error', () => undefined);
  }

  check(): Promise<ProbeResult> {
    return timed(async () => {
      if (this.#client.status === 'wait' || this.#client.status === 'end') {
        await withTimeout(this.#client.connect(), this.timeoutMs, 'Redis');
      }
      const pong = await withTimeout(this.#client.ping(), this.timeoutMs, 'Redis');
      if (pong !== 'PONG') throw new Error(`unexpected PING reply ${JSON.stringify(pong)}`);
    });
  }

  async close(): Promise<void> {
    this.#client.disconnect();
  }
}

/** `SELECT 1` on a fresh connection per check (checks are seconds apart; no pool to go stale). */
export class DatabaseProbe implements DependencyProbe {
  readonly name = 'database';

  constructor(private readonly url: string, private readonly timeoutMs: number) {}

  check(): Promise<ProbeResult> {
    return timed(async () => {
      const client = new Client({
        connectionString: this.url,
        connectionTimeoutMillis: this.timeoutMs,
        query_timeout: this.timeoutMs,
        application_name: 'llm-health',
      });
      client.on('error', () => undefined);
      try {
        await withTimeout(client.connect(), this.timeoutMs, 'PostgreSQL');
        await withTimeout(client.query('SELECT 1'), this.timeoutMs, 'PostgreSQL');
      } finally {
        void client.end().catch(() => undefined);
      }
    });
  }

  async close(): Promise<void> {
    // Nothing held between checks.
  }
}

/**
 * The dependencies this deployment configured (REDIS_URL, DATABASE_URL): none when unset, so
 * readiness never waits on something the server does not use.
 */
@Injectable()
export class DependencyProbes implements OnApplicationShutdown {
  readonly #logger = new Logger('Dependencies');
  readonly probes: readonly DependencyProbe[];
  readonly #last = new Map<DependencyName, boolean>();

  constructor(@Inject(AppConfig) config: ObservabilityConfig) {
    const probes: DependencyProbe[] = [];
    if (config.redisUrl) probes.push(new RedisProbe(config.redisUrl, config.healthCheckTimeoutMs));
    if (config.databaseUrl) probes.push(new DatabaseProbe(config.databaseUrl, config.healthCheckTimeoutMs));
    this.probes = probes;
  }

  get(name: DependencyName): DependencyProbe | undefined {
    return this.probes.find((p) => p.name === name);
  }

  /** Checks one dependency and logs when it goes down or comes back (not on every check). */
  async check(probe: DependencyProbe): Promise<ProbeResult> {
    const result = await probe.check();
    const before = this.#last.get(probe.name);
    if (before !== result.up) {
      this.#last.set(probe.name, result.up);
      if (!result.up) this.#logger.warn(`${probe.name} is down: ${result.error}`);
      else if (before === false) this.#logger.log(`${probe.name} is reachable again`);
    }
    return result;
  }

  async onApplicationShutdown(): Promise<void> {
    await Promise.all(this.probes.map((p) => p.close().catch(() => undefined)));
  }
}
