import { Injectable } from '@nestjs/common';
import { EventEmitter } from 'node:events';
import { AuthErrorCode } from './auth.exception';

/** Which limit refused a request. */
export type LimitKind = 'ip_requests' | 'key_requests' | 'key_tokens' | 'key_concurrency';
/** A dependency whose outage the gateway survives. */
export type Backend = 'redis' | 'key_store';

export interface AuthStats {
  /** Requests refused, by error code (401, 403, 429, 503 of this library). */
  readonly rejections: Readonly<Partial<Record<AuthErrorCode, number>>>;
  /** 429s by the limit that tripped. */
  readonly rateLimited: Readonly<Record<LimitKind, number>>;
  /** Failed calls to each backend (each one also logged). */
  readonly failures: Readonly<Record<Backend, number>>;
  /** Whether the backend's last call failed (true until a call succeeds again). */
  readonly degraded: Readonly<Record<Backend, boolean>>;
}

export interface AuthStatsEvents {
  rejected: [code: AuthErrorCode, limit: LimitKind | undefined];
  failure: [backend: Backend, error: Error];
  recovered: [backend: Backend];
}

/**
 * Counters of refusals and backend failures. Plain numbers and events, no metrics library:
 * whoever exports metrics reads `stats()` or subscribes to the events
 * (`llm_auth_rejections_total{code}`, `llm_rate_limited_total{limit}`,
 * `llm_backend_failures_total{backend}` are the intended names).
 */
@Injectable()
export class AuthStatsService extends EventEmitter<AuthStatsEvents> {
  readonly #rejections: Partial<Record<AuthErrorCode, number>> = {};
  readonly #rateLimited: Record<LimitKind, number> = { ip_requests: 0, key_requests: 0, key_tokens: 0, key_concurrency: 0 };
  readonly #failures: Record<Backend, number> = { redis: 0, key_store: 0 };
  readonly #degraded: Record<Backend, boolean> = { redis: false, key_store: false };

  rejected(code: AuthErrorCode, limit?: LimitKind): void {
    this.#rejections[code] = (this.#rejections[code] ?? 0) + 1;
    if (limit) this.#rateLimited[limit]++;
    this.emit('rejected', code, limit);
  }

  failed(backend: Backend, error: Error): void {
    this.#failures[backend]++;
    this.#degraded[backend] = true;
    this.emit('failure', backend, error);
  }

  recovered(backend: Backend): void {
    if (!this.#degraded[backend]) return;
    this.#degraded[backend] = false;
    this.emit('recovered', backend);
  }

  isDegraded(backend: Backend): boolean {
    return this.#degraded[backend];
  }

  stats(): AuthStats {
    return {
      rejections: { ...this.#rejections },
      rateLimited: { ...this.#rateLimited },
      failures: { ...this.#failures },
      degraded: { ...this.#degraded },
    };
  }
}
