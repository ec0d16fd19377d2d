import { Injectable } from '@nestjs/common';
import { AppConfig } from '@app/common';

/** Where retrieval commands send their requests; flags win over the environment. */
export interface ServerTarget {
  /** Server base URL (default from HOST and PORT, e.g. http://127.0.0.1:8000). */
  url?: string;
  /** API key (default $API_KEY, else the first of API_KEYS). */
  key?: string;
}

/**
 * The CLI's way to collections: the running server's API. The server owns the vector store and
 * the embedding model, so the CLI never loads a model nor opens the store behind its back.
 */
@Injectable()
export class RetrievalClient {
  constructor(private readonly config: AppConfig) {}

  list(target: ServerTarget): Promise<{ data: { name: string; dimension: number; chunks: number }[] }> {
    return this.#request(target, 'GET', '/v1/collections') as Promise<{ data: { name: string; dimension: number; chunks: number }[] }>;
  }

  create(target: ServerTarget, name: string): Promise<unknown> {
    return this.#request(target, 'POST', '/v1/collections', { name });
  }

  delete(target: ServerTarget, name: string): Promise<unknown> {
    return this.#request(target, 'DELETE', `/v1/collections/${encodeURIComponent(name)}`);
  }

  addDocument(target: ServerTarget, collection: string, doc: { text: string; id: string; metadata: Record<string, string> }) {
    return this.#request(target, 'POST', `/v1/collections/${encodeURIComponent(collection)}/documents`, doc) as Promise<{
      document_id: string;
      chunks: number;
    }>;
  }

  async #request(target: ServerTarget, method: string, path: string, body?: object): Promise<unknown> {
    const url = (target.url ?? this.config.localUrl()).replace(/\/+$/, '');
    const key = target.key ?? (process.env.API_KEY?.trim() || this.config.apiKeys[0]);
    let res: Response;
    try {
      res = await fetch(`${url}${path}`, {
        method,
        headers: { ...(key ? { Authorization: `Bearer ${key}` } : {}), ...(body ? { 'Content-Type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
        // Embedding a large document on a CPU takes a while.
        signal: AbortSignal.timeout(10 * 60_000),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      throw new Error(`server not reachable at ${url} (${cause}); start it (npm start) or pass --url`);
    }
    const parsed = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
    if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${parsed?.error?.message ?? res.statusText}`);
    return parsed;
  }
}
