import { Injectable } from '@nestjs/common';
import { AppConfig } from '@app/common';
import { serverRequest, ServerTarget } from '../server.request';

export type { ServerTarget } from '../server.request';

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

  #request(target: ServerTarget, method: string, path: string, body?: object): Promise<unknown> {
    // Embedding a large document on a CPU takes a while.
    return serverRequest(target, this.config, method, path, body, 10 * 60_000);
  }
}
