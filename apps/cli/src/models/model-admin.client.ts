import { Injectable } from '@nestjs/common';
import { AppConfig } from '@app/common';

/** Where model commands send their requests; flags win over the environment. */
export interface ServerTarget {
  /** Server base URL (default from HOST and PORT, e.g. http://127.0.0.1:8000). */
  url?: string;
  /** API key with the admin scope (default $API_KEY, else the first of API_KEYS). */
  key?: string;
}

/** The server did not answer at all (not running, wrong URL): callers may fall back to the configuration. */
export class ServerUnreachable extends Error {}

/** `/admin/models` of a running server (the registry lives in its process). */
@Injectable()
export class ModelAdminClient {
  constructor(private readonly config: AppConfig) {}

  url(target: ServerTarget): string {
    return (target.url ?? this.config.localUrl()).replace(/\/+$/, '');
  }

  list(target: ServerTarget): Promise<ModelList> {
    return this.#request(target, 'GET', '/admin/models') as Promise<ModelList>;
  }

  /** Loads, unloads (waits until done) or rescans; answers the model's entry (or the list for refresh). */
  act(target: ServerTarget, action: 'load' | 'unload' | 'refresh', model?: string, timeoutMs = 600_000): Promise<Record<string, unknown>> {
    return this.#request(target, 'POST', '/admin/models', { action, model }, timeoutMs) as Promise<Record<string, unknown>>;
  }

  async #request(target: ServerTarget, method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<unknown> {
    const url = this.url(target);
    const key = target.key ?? (process.env.API_KEY?.trim() || this.config.apiKeys[0]);
    let res: Response;
    try {
      res = await fetch(`${url}${path}`, {
        method,
        headers: { ...(key ? { Authorization: `Bearer ${key}` } : {}), ...(body ? { 'Content-Type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      throw new ServerUnreachable(`server not reachable at ${url} (${cause})`);
    }
    const json = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
    if (!res.ok) throw new Error(`${method} ${url}${path} answered ${res.status}: ${json?.error?.message ?? res.statusText}`);
    return json;
  }
}

/** `GET /admin/models` as the CLI reads it. */
export interface ModelList {
  readonly default: string;
  readonly embedding: string;
  readonly memory: { budget: { ram: number | null; vram: number | null }; used: { ram: number; vram: number } };
  readonly data: readonly AdminModel[];
}

export interface AdminModel {
  readonly id: string;
  readonly aliases: readonly string[];
  readonly kind: string;
  readonly path: string;
  readonly source: string;
  readonly state: string;
  readonly default: boolean;
  readonly error: string | null;
  readonly memory: { ram: number; vram: number } | null;
  readonly in_flight: number;
  readonly keep_alive_seconds: number | null;
  readonly unload_at: string | null;
  readonly last_used_at: string | null;
}
