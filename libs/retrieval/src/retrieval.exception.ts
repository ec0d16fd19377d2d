import { ApiError, ErrorMapping, ErrorType } from '@app/common';

export enum RetrievalErrorCode {
  CollectionNotFound = 'collection_not_found',
  CollectionExists = 'collection_exists',
  InvalidCollectionName = 'invalid_collection_name',
  EmptyDocument = 'empty_document',
  DocumentTooLarge = 'document_too_large',
  InvalidFilter = 'invalid_filter',
  DimensionMismatch = 'embedding_dimension_mismatch',
  StoreUnavailable = 'vector_store_unavailable',
  CollectionForbidden = 'collection_forbidden',
  UploadCancelled = 'upload_cancelled',
}

const MAPPING: Record<RetrievalErrorCode, ErrorMapping> = {
  [RetrievalErrorCode.CollectionNotFound]: { status: 404, type: ErrorType.NotFound },
  [RetrievalErrorCode.CollectionExists]: { status: 409, type: ErrorType.InvalidRequest },
  [RetrievalErrorCode.InvalidCollectionName]: { status: 400, type: ErrorType.InvalidRequest },
  [RetrievalErrorCode.EmptyDocument]: { status: 400, type: ErrorType.InvalidRequest },
  [RetrievalErrorCode.DocumentTooLarge]: { status: 413, type: ErrorType.InvalidRequest },
  [RetrievalErrorCode.InvalidFilter]: { status: 400, type: ErrorType.InvalidRequest },
  // A collection made with another embedding model: its vectors cannot be compared with ours.
  [RetrievalErrorCode.DimensionMismatch]: { status: 409, type: ErrorType.InvalidRequest },
  [RetrievalErrorCode.StoreUnavailable]: { status: 503, type: ErrorType.Unavailable },
  // A shared collection that another key owns: readable, not changeable.
  [RetrievalErrorCode.CollectionForbidden]: { status: 403, type: ErrorType.Permission },
  // The client went away during an upload: the rest of its chunks are not embedded.
  [RetrievalErrorCode.UploadCancelled]: { status: 400, type: ErrorType.InvalidRequest },
};

/** Client mistakes about collections and documents, and an unreachable vector store. */
export class RetrievalException extends ApiError<RetrievalErrorCode> {
  constructor(code: RetrievalErrorCode, message: string, options?: ApiError['options']) {
    super(code, MAPPING[code], message, options);
  }
}
