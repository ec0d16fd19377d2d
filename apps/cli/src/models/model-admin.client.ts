import { Injectable } from '@nestjs/common';
import { AppConfig } from '@app/common';
import { serverRequest, serverUrl, ServerTarget } from '../server.request';

export { ServerUnreachable } from '../server.request';
export type { ServerTarget } from '../server.request';

/** `/admin/models` of a running server (the registry lives in its process). */
@Injectable()
export class ModelAdminClient {
  constructor(private readonly config: AppConfig) {}

  url(target: ServerTarget): string {
    return serverUrl(target, this.config);
  }

  list(target: ServerTarget): Promise<ModelList> {
    return this.#request(target, 'GET', '/admin/models') as Promise<ModelList>;
  }

  /** Loads, unloads (waits until done) or rescans; answers the model's entry (or the list for refresh). */
  act(target: ServerTarget, action: 'load' | 'unload' | 'refresh', model?: string, timeoutMs = 600_000): Promise<Record<string, unknown>> {
    return this.#request(target, 'POST', '/admin/models', { action, model }, timeoutMs) as Promise<Record<string, unknown>>;
  }

  #request(target: ServerTarget, method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<unknown> {
    return serverRequest(target, this.config, method, path, body, timeoutMs);
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
