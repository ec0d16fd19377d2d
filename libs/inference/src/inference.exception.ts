import { ApiError, ErrorMapping, ErrorType } from '@app/common';

export enum InferenceErrorCode {
  ContextLengthExceeded = 'context_length_exceeded',
  ModelNotFound = 'model_not_found',
  ModelLoading = 'model_loading',
  ModelLoadFailed = 'model_load_failed',
  EmbeddingInputTooLong = 'embedding_input_too_long',
  GenerationFailed = 'generation_failed',
  UnsupportedSchema = 'unsupported_schema',
  SchemaTooComplex = 'schema_too_complex',
  InvalidToken = 'invalid_token',
  /** The model named is of another kind (an embedding model asked to chat). */
  ModelKindMismatch = 'model_kind_mismatch',
  /** The memory budget cannot make room for the model (too big, or every other model busy). */
  ModelBudgetExceeded = 'model_budget_exceeded',
}

const MAPPING: Record<InferenceErrorCode, ErrorMapping> = {
  [InferenceErrorCode.ContextLengthExceeded]: { status: 400, type: ErrorType.InvalidRequest },
  [InferenceErrorCode.ModelNotFound]: { status: 404, type: ErrorType.NotFound },
  [InferenceErrorCode.ModelLoading]: { status: 503, type: ErrorType.Unavailable },
  [InferenceErrorCode.ModelLoadFailed]: { status: 503, type: ErrorType.Unavailable },
  [InferenceErrorCode.EmbeddingInputTooLong]: { status: 400, type: ErrorType.InvalidRequest },
  [InferenceErrorCode.GenerationFailed]: { status: 500, type: ErrorType.Server },
  [InferenceErrorCode.UnsupportedSchema]: { status: 400, type: ErrorType.InvalidRequest },
  [InferenceErrorCode.SchemaTooComplex]: { status: 400, type: ErrorType.InvalidRequest },
  [InferenceErrorCode.InvalidToken]: { status: 400, type: ErrorType.InvalidRequest },
  [InferenceErrorCode.ModelKindMismatch]: { status: 400, type: ErrorType.InvalidRequest },
  [InferenceErrorCode.ModelBudgetExceeded]: { status: 503, type: ErrorType.Unavailable },
};

export class InferenceException extends ApiError<InferenceErrorCode> {
  constructor(code: InferenceErrorCode, message: string, options?: ApiError['options']) {
    super(code, MAPPING[code], message, options);
  }
}
