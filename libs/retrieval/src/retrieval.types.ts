/** Scalar metadata of a document; filters match these values exactly. */
export type MetadataValue = string | number | boolean;
export type Metadata = Readonly<Record<string, MetadataValue>>;

/**
 * The embedding model as retrieval sees it. apps/api provides it from the inference layer
 * (which this library must not import): vectors, and that same model's tokenizer so that
 * chunks end on its token boundaries and fit its context.
 */
export interface RetrievalEmbedder {
  /** One vector per text, in order. */
  embed(texts: readonly string[]): Promise<Float32Array[]>;
  /** The embedding model's tokenizer (the model may be loaded on first use). */
  tokenizer(): Promise<Tokenizer>;
}

export interface Tokenizer {
  tokenize(text: string): number[];
  detokenize(tokens: readonly number[]): string;
  /** Most tokens one embedding input may have; chunks are never longer. */
  readonly maxTokens?: number;
}

/** Injection token of the RetrievalEmbedder. */
export const RETRIEVAL_EMBEDDER = Symbol('RETRIEVAL_EMBEDDER');

/** One stored chunk: its vector, its text and the metadata of its document. */
export interface VectorRecord {
  /** `<documentId>:<chunk index>`. */
  readonly id: string;
  readonly documentId: string;
  readonly chunkIndex: number;
  readonly text: string;
  readonly vector: Float32Array;
  readonly metadata: Metadata;
}

export interface CollectionInfo {
  readonly name: string;
  /** Vector length; every record of the collection has it. */
  readonly dimension: number;
  /** Stored chunks. */
  readonly chunks: number;
  /** Id of the API key that created it; null for a collection created before owners were recorded. */
  readonly owner: string | null;
  /** Readable (queries, grounded generation) by every key; only its owner and admin keys change it. */
  readonly shared: boolean;
}

/** Who created a collection, and whether every key may read it. */
export interface CollectionOwnership {
  readonly owner: string;
  readonly shared: boolean;
}

/**
 * The caller as retrieval sees it: its key id and whether it holds the admin scope. A key sees
 * the collections it created, shared ones and (admin) all; it changes only its own (admin: all).
 */
export interface CollectionAccessor {
  readonly id: string;
  readonly admin: boolean;
}

/**
 * Tokens held for an upload's embedding work (the API layer's token-rate reservation): settled
 * to the tokens embedded, or released.
 */
export interface TokenHold {
  settle(actual: number): Promise<void>;
  release(): Promise<void>;
}

export interface SearchOptions {
  /** Best matches to return. */
  readonly topK: number;
  /** Cosine similarity below which a match is dropped (-1..1). */
  readonly minScore?: number;
  /** Every pair must equal the document's metadata (`document_id` matches the document id). */
  readonly filter?: Metadata;
}

export interface SearchHit {
  readonly id: string;
  readonly documentId: string;
  readonly chunkIndex: number;
  readonly text: string;
  /** Cosine similarity (1 = same direction). */
  readonly score: number;
  readonly metadata: Metadata;
}

/**
 * Where vectors live. LanceDB (embedded, local folder or object storage) implements it; another
 * database (Qdrant, pgvector) is one more implementation of these methods.
 */
export interface VectorStore {
  listCollections(): Promise<CollectionInfo[]>;
  /** null when there is no such collection. */
  getCollection(name: string): Promise<CollectionInfo | null>;
  /** Throws RetrievalException(CollectionExists) when the name is taken. */
  createCollection(name: string, dimension: number, ownership: CollectionOwnership): Promise<CollectionInfo>;
  /** Removes the collection and its data; false when there was none. */
  dropCollection(name: string): Promise<boolean>;
  /** Adds records, replacing those with the same ids. */
  upsert(name: string, records: readonly VectorRecord[]): Promise<void>;
  /** Removes a document's chunks; returns how many were removed. */
  deleteDocument(name: string, documentId: string): Promise<number>;
  /** Nearest records by cosine similarity, best first. */
  search(name: string, vector: Float32Array, options: SearchOptions): Promise<SearchHit[]>;
  close(): Promise<void>;
}

/** Injection token of the VectorStore. */
export const VECTOR_STORE = Symbol('VECTOR_STORE');

/** Collection names: safe as folder names on every store, and in URLs. */
export const COLLECTION_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/;
