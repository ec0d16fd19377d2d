import { Inject, Injectable, OnApplicationShutdown } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { AppConfig } from '@app/common';
import { chunkText } from './chunker';
import { notFound } from './lancedb-vector.store';
import { RetrievalErrorCode, RetrievalException } from './retrieval.exception';
import { COLLECTION_NAME_PATTERN, RETRIEVAL_EMBEDDER, VECTOR_STORE } from './retrieval.types';
import type { CollectionInfo, Metadata, RetrievalEmbedder, SearchHit, VectorStore } from './retrieval.types';

export interface NewDocument {
  readonly text: string;
  /** Stable id; a document added again under the same id replaces its chunks. Default: generated. */
  readonly id?: string;
  readonly metadata?: Metadata;
}

export interface AddedDocument {
  readonly document_id: string;
  readonly chunks: number;
  readonly tokens: number;
}

export interface RetrievalQuery {
  readonly query: string;
  /** Default 4. */
  readonly topK?: number;
  /** Default 0 (cosine similarity). */
  readonly minScore?: number;
  readonly filter?: Metadata;
}

/** A retrieved chunk as responses report it. */
export interface Source {
  readonly id: string;
  readonly document_id: string;
  readonly chunk_index: number;
  readonly score: number;
  /** The reranker's score (0 to 1), when the chunks were reranked (`rerank: true`). */
  readonly relevance_score?: number;
}

/** What a generation with `retrieval` uses: the chunks and the context block put into the prompt. */
export interface RetrievedContext {
  readonly hits: readonly SearchHit[];
  readonly sources: readonly Source[];
  /** The documented context block, or '' when nothing matched. */
  readonly context: string;
}

export const DEFAULT_TOP_K = 4;
export const DEFAULT_MIN_SCORE = 0;

/**
 * The context block a generation with `retrieval` receives before its prompt (completions) or as
 * a system message (chat): numbered chunks, best first. Documented in the README.
 */
export function renderContext(hits: readonly SearchHit[]): string {
  if (hits.length === 0) return '';
  return `Context:\n${hits.map((h, i) => `[${i + 1}] ${h.text}`).join('\n')}\n\n`;
}

export function toSource(hit: SearchHit): Source {
  return { id: hit.id, document_id: hit.documentId, chunk_index: hit.chunkIndex, score: Math.round(hit.score * 1e6) / 1e6 };
}

/** Collections, ingestion (chunk, embed, store) and search, over the injected store and embedder. */
@Injectable()
export class RetrievalService implements OnApplicationShutdown {
  #dimension: Promise<number> | null = null;

  constructor(
    @Inject(VECTOR_STORE) private readonly store: VectorStore,
    @Inject(RETRIEVAL_EMBEDDER) private readonly embedder: RetrievalEmbedder,
    private readonly config: AppConfig,
  ) {}

  listCollections(): Promise<CollectionInfo[]> {
    return this.store.listCollections();
  }

  async getCollection(name: string): Promise<CollectionInfo> {
    const info = await this.store.getCollection(checkName(name));
    if (!info) throw notFound(name);
    return info;
  }

  async createCollection(name: string): Promise<CollectionInfo> {
    return this.store.createCollection(checkName(name), await this.#embeddingDimension());
  }

  async deleteCollection(name: string): Promise<void> {
    if (!(await this.store.dropCollection(checkName(name)))) throw notFound(name);
  }

  async addDocument(name: string, doc: NewDocument): Promise<AddedDocument> {
    const collection = await this.getCollection(name);
    if (doc.text.trim().length === 0) {
      throw new RetrievalException(RetrievalErrorCode.EmptyDocument, 'The document has no text', { param: 'text' });
    }
    const bytes = Buffer.byteLength(doc.text, 'utf8');
    if (bytes > this.config.retrievalUploadLimit) {
      throw new RetrievalException(
        RetrievalErrorCode.DocumentTooLarge,
        `The document has ${bytes} bytes; RETRIEVAL_UPLOAD_LIMIT is ${this.config.retrievalUploadLimit}`,
        { param: 'text' },
      );
    }
    const tokenizer = await this.embedder.tokenizer();
    const size = Math.min(this.config.retrievalChunkTokens, tokenizer.maxTokens ?? Infinity);
    const overlap = Math.min(this.config.retrievalChunkOverlap, size - 1);
    const chunks = chunkText(doc.text, tokenizer, { size, overlap });
    if (chunks.length === 0) {
      throw new RetrievalException(RetrievalErrorCode.EmptyDocument, 'The document has no text', { param: 'text' });
    }
    const documentId = doc.id ?? `doc_${randomBytes(8).toString('hex')}`;
    const metadata = doc.metadata ?? {};
    const vectors: Float32Array[] = [];
    // Small batches: the embedder runs them one after another anyway, and memory stays flat.
    for (let i = 0; i < chunks.length; i += 16) vectors.push(...(await this.embedder.embed(chunks.slice(i, i + 16).map((c) => c.text))));
    if (vectors[0].length !== collection.dimension) {
      throw new RetrievalException(
        RetrievalErrorCode.DimensionMismatch,
        `The collection '${name}' holds ${collection.dimension}-dimension vectors but the embedding model makes ${vectors[0].length}`,
      );
    }
    await this.store.deleteDocument(name, documentId);
    await this.store.upsert(
      name,
      chunks.map((c, i) => ({ id: `${documentId}:${c.index}`, documentId, chunkIndex: c.index, text: c.text, vector: vectors[i], metadata })),
    );
    return { document_id: documentId, chunks: chunks.length, tokens: chunks.reduce((n, c) => n + c.tokens, 0) - overlap * (chunks.length - 1) };
  }

  /** Removes a document's chunks; returns how many there were. */
  async deleteDocument(name: string, documentId: string): Promise<number> {
    await this.getCollection(name);
    return this.store.deleteDocument(name, documentId);
  }

  async query(name: string, q: RetrievalQuery): Promise<SearchHit[]> {
    await this.getCollection(name);
    if (q.query.trim().length === 0) {
      throw new RetrievalException(RetrievalErrorCode.EmptyDocument, 'The query has no text', { param: 'query' });
    }
    const [vector] = await this.embedder.embed([await this.#fitEmbedding(q.query)]);
    return this.store.search(name, vector, { topK: q.topK ?? DEFAULT_TOP_K, minScore: q.minScore ?? DEFAULT_MIN_SCORE, filter: q.filter });
  }

  /** The chunks for a generation's `retrieval` option and the context block they make. */
  async retrieve(name: string, q: RetrievalQuery): Promise<RetrievedContext> {
    const hits = await this.query(name, q);
    return { hits, sources: hits.map(toSource), context: renderContext(hits) };
  }

  async onApplicationShutdown(): Promise<void> {
    await this.store.close();
  }

  /** A question longer than the embedding context is searched by its beginning rather than refused. */
  async #fitEmbedding(text: string): Promise<string> {
    const tokenizer = await this.embedder.tokenizer();
    if (tokenizer.maxTokens === undefined) return text;
    const tokens = tokenizer.tokenize(text);
    return tokens.length <= tokenizer.maxTokens ? text : tokenizer.detokenize(tokens.slice(0, tokenizer.maxTokens));
  }

    #embeddingDimension(): Promise<number> {
    this.#dimension ??= this.embedder.embed(['dimension probe']).then(([v]) => v.length);
    this.#dimension.catch(() => (this.#dimension = null));
    return this.#dimension;
  }
}

function checkName(name: string): string {
  if (!COLLECTION_NAME_PATTERN.test(name)) {
    throw new RetrievalException(
      RetrievalErrorCode.InvalidCollectionName,
      `Collection names are 1-64 characters: lowercase letters, digits, '_' and '-', starting with a letter or digit (got ${JSON.stringify(name)})`,
      { param: 'name' },
    );
  }
  return name;
}
