import { Inject, Injectable, Logger, OnApplicationShutdown } from '@nestjs/common';
import type { RetrievalConfig } from './retrieval.config';
import { randomBytes } from 'node:crypto';
import { AppConfig, CommonErrorCode, CommonException, InputGuardService } from '@app/common';
import { chunkText } from './chunker';
import { notFound } from './lancedb-vector.store';
import { RetrievalErrorCode, RetrievalException } from './retrieval.exception';
import { COLLECTION_NAME_PATTERN, RETRIEVAL_EMBEDDER, VECTOR_STORE } from './retrieval.types';
import type { CollectionAccessor, CollectionInfo, Metadata, RetrievalEmbedder, SearchHit, TokenHold, VectorStore } from './retrieval.types';

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

/** Chunks embedded per call to the embedder during an upload (see addDocument). */
export const EMBED_BATCH = 8;

/** Options of {@link RetrievalService.addDocument}. */
export interface AddDocumentOptions {
  /**
   * Holds the upload's tokens (the chunks' tokens, which is what the embedding model evaluates)
   * before any is embedded, e.g. against the caller's tokens-per-window limit; may throw to refuse.
   */
  readonly reserveTokens?: (tokens: number) => Promise<TokenHold>;
  /** Aborts the upload between embedding calls (the client went away). */
  readonly signal?: AbortSignal;
}

/**
 * Collections, ingestion (chunk, embed, store) and search, over the injected store and embedder.
 * Every operation names its caller: a collection belongs to the key that created it, and is seen
 * only by that key, admin keys and, when created `shared`, every key (read-only for them).
 * Another key's private collection does not exist as far as a caller can tell (404).
 */
@Injectable()
export class RetrievalService implements OnApplicationShutdown {
  readonly #logger = new Logger('Retrieval');
  #dimension: Promise<number> | null = null;

  constructor(
    @Inject(VECTOR_STORE) private readonly store: VectorStore,
    @Inject(RETRIEVAL_EMBEDDER) private readonly embedder: RetrievalEmbedder,
    @Inject(AppConfig) private readonly config: RetrievalConfig,
    private readonly guard: InputGuardService,
  ) {}

  async listCollections(who: CollectionAccessor): Promise<CollectionInfo[]> {
    return (await this.store.listCollections()).filter((c) => canRead(c, who));
  }

  async getCollection(name: string, who: CollectionAccessor): Promise<CollectionInfo> {
    const info = await this.store.getCollection(checkName(name));
    if (!info || !canRead(info, who)) throw notFound(name);
    return info;
  }

  async createCollection(name: string, who: CollectionAccessor, options: { shared?: boolean } = {}): Promise<CollectionInfo> {
    return this.store.createCollection(checkName(name), await this.#embeddingDimension(), { owner: who.id, shared: options.shared ?? false });
  }

  async deleteCollection(name: string, who: CollectionAccessor): Promise<void> {
    await this.#writable(name, who);
    if (!(await this.store.dropCollection(name))) throw notFound(name);
  }

  async addDocument(name: string, doc: NewDocument, who: CollectionAccessor, options: AddDocumentOptions = {}): Promise<AddedDocument> {
    const collection = await this.#writable(name, who);
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
    // A document is future prompt text: the input guard's patterns apply to it as to a prompt.
    const rule = this.guard.matches(doc.text);
    if (rule >= 0) {
      this.#logger.warn(`upload refused: text matches INPUT_GUARD_PATTERNS rule ${rule + 1}`);
      throw new CommonException(CommonErrorCode.InputRejected, `text was refused by the input guard (rule ${rule + 1})`, { param: 'text' });
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
    const hold = await options.reserveTokens?.(chunks.reduce((n, c) => n + c.tokens, 0));
    const vectors: Float32Array[] = [];
    let embedded = 0;
    try {
      // A few chunks per call: the embedder serves one call at a time, so a query or a semantic
      // cache lookup waits behind at most one such call, not behind the whole document.
      for (let i = 0; i < chunks.length; i += EMBED_BATCH) {
        if (options.signal?.aborted) {
          throw new RetrievalException(RetrievalErrorCode.UploadCancelled, `The upload was cancelled after ${i} of ${chunks.length} chunks`);
        }
        const batch = chunks.slice(i, i + EMBED_BATCH);
        vectors.push(...(await this.embedder.embed(batch.map((c) => c.text))));
        embedded += batch.reduce((n, c) => n + c.tokens, 0);
      }
    } finally {
      await hold?.settle(embedded);
    }
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
  async deleteDocument(name: string, documentId: string, who: CollectionAccessor): Promise<number> {
    await this.#writable(name, who);
    return this.store.deleteDocument(name, documentId);
  }

  async query(name: string, q: RetrievalQuery, who: CollectionAccessor): Promise<SearchHit[]> {
    await this.getCollection(name, who);
    if (q.query.trim().length === 0) {
      throw new RetrievalException(RetrievalErrorCode.EmptyDocument, 'The query has no text', { param: 'query' });
    }
    const [vector] = await this.embedder.embed([await this.#fitEmbedding(q.query)]);
    return this.store.search(name, vector, { topK: q.topK ?? DEFAULT_TOP_K, minScore: q.minScore ?? DEFAULT_MIN_SCORE, filter: q.filter });
  }

  /**
   * The chunks for a generation's `retrieval` option and the context block they make. Chunks are
   * text the client did not write (a shared collection, a poisoned document): one that matches
   * an INPUT_GUARD_PATTERNS rule is left out of the prompt (and logged), not passed to the model.
   */
  async retrieve(name: string, q: RetrievalQuery, who: CollectionAccessor): Promise<RetrievedContext> {
    const hits = this.screen(name, await this.query(name, q, who));
    return { hits, sources: hits.map(toSource), context: renderContext(hits) };
  }

  /** The hits of collection `name` that may go into a prompt: those no INPUT_GUARD_PATTERNS rule matches (the others are logged). */
  screen(name: string, hits: readonly SearchHit[]): SearchHit[] {
    return hits.filter((hit) => {
      const rule = this.guard.matches(hit.text);
      if (rule >= 0) this.#logger.warn(`retrieved chunk ${hit.id} of '${name}' left out: it matches INPUT_GUARD_PATTERNS rule ${rule + 1}`);
      return rule < 0;
    });
  }

  async onApplicationShutdown(): Promise<void> {
    await this.store.close();
  }

  /** The collection, when `who` may change it: 404 when it cannot even see it, 403 when read-only to it. */
  async #writable(name: string, who: CollectionAccessor): Promise<CollectionInfo> {
    const info = await this.getCollection(name, who);
    if (!canWrite(info, who)) {
      throw new RetrievalException(
        RetrievalErrorCode.CollectionForbidden,
        info.owner === null
          ? `The collection '${name}' has no recorded owner (created before owners were kept): only an admin key may change it`
          : `The collection '${name}' is shared by another API key: it can be read, and changed only by its owner or an admin key`,
        { param: 'name' },
      );
    }
    return info;
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

/** Owned, shared, created before owners were kept (readable by all, as it always was), or admin. */
function canRead(info: CollectionInfo, who: CollectionAccessor): boolean {
  return who.admin || info.shared || info.owner === null || info.owner === who.id;
}

function canWrite(info: CollectionInfo, who: CollectionAccessor): boolean {
  return who.admin || (info.owner !== null && info.owner === who.id);
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
