import { AsyncLocalStorage } from 'node:async_hooks';
import type { IncomingMessage } from 'node:http';
import type { Span } from '@opentelemetry/api';

/** Exact-match or semantic (embedding) response cache. */
export type CacheKind = 'exact' | 'semantic';
/** What one cache lookup found. `error` = the cache could not be asked (the request goes on). */
export type CacheResult = 'hit' | 'miss' | 'error';
/** Which limit turned a request away. */
export type RateLimitKind = 'requests' | 'tokens' | 'concurrency';

export const CACHE_KINDS: readonly CacheKind[] = ['exact', 'semantic'];
export const CACHE_RESULTS: readonly CacheResult[] = ['hit', 'miss', 'error'];
export const RATE_LIMIT_KINDS: readonly RateLimitKind[] = ['requests', 'tokens', 'concurrency'];

const STORE = new AsyncLocalStorage<RequestTelemetry>();
const ON_REQUEST = Symbol('requestTelemetry');

/**
 * What one HTTP request gathered on its way through the app (key id, cache result, token counts,
 * scheduler timings), for its log line and its spans. Code anywhere in the request's async flow
 * reaches it with `RequestTelemetry.current()`; code that holds the request object uses `of(req)`.
 */
export class RequestTelemetry {
  /** `performance.now()` when the request arrived. */
  readonly startedAt = performance.now();
  route = 'unmatched';
  keyId: string | undefined;
  /** e.g. `exact:hit`, `semantic:miss`: the last lookup wins (exact first, semantic after). */
  cache: string | undefined;
  rateLimited: RateLimitKind | undefined;
  /** The model id the request ran on, for the usage ledger; unset = the served model (MODEL_NAME). */
  model: string | undefined;
  promptTokens = 0;
  cachedPromptTokens = 0;
  completionTokens = 0;
  finishReason: string | undefined;
  queueWaitMs: number | undefined;
  ttftMs: number | undefined;
  traceId: string | undefined;
  spanId: string | undefined;
  /** The HTTP server span (tracing on), renamed after the route template once routed. */
  serverSpan: Span | undefined;
  #onEnd: (() => void)[] | null = [];

  /**
   * Runs `fn` once the response has ended (sent, failed, or abandoned by the client), e.g. to let
   * go of a model the request held; at once if it has ended already.
   */
  whenEnded(fn: () => void): void {
    if (this.#onEnd) this.#onEnd.push(fn);
    else fn();
  }

  /** The response has ended: runs the whenEnded callbacks (once). */
  end(): void {
    const callbacks = this.#onEnd ?? [];
    this.#onEnd = null;
    for (const fn of callbacks) {
      try {
        fn();
      } catch {
        /* a failing callback must not stop the others */
      }
    }
  }

  /** The telemetry of the request whose async flow is running, if any. */
  static current(): RequestTelemetry | undefined {
    return STORE.getStore();
  }

  static of(req: IncomingMessage): RequestTelemetry | undefined {
    return (req as unknown as Record<symbol, RequestTelemetry | undefined>)[ON_REQUEST];
  }

  static attach(req: IncomingMessage): RequestTelemetry {
    const telemetry = new RequestTelemetry();
    (req as unknown as Record<symbol, RequestTelemetry>)[ON_REQUEST] = telemetry;
    return telemetry;
  }

  /** Runs `fn` (and everything it starts) with this telemetry as `current()`. */
  run<T>(fn: () => T): T {
    return STORE.run(this, fn);
  }
}
