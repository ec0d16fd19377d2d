import { ApiError, ErrorMapping, ErrorType } from '@app/common';

export enum RankingErrorCode {
  NotConfigured = 'rerank_not_configured',
  ModelNotFound = 'rerank_model_not_found',
  LoadFailed = 'rerank_model_unavailable',
  InputTooLong = 'rerank_input_too_long',
}

const MAPPING: Record<RankingErrorCode, ErrorMapping> = {
  [RankingErrorCode.NotConfigured]: { status: 404, type: ErrorType.NotFound },
  [RankingErrorCode.ModelNotFound]: { status: 404, type: ErrorType.NotFound },
  [RankingErrorCode.LoadFailed]: { status: 503, type: ErrorType.Unavailable },
  [RankingErrorCode.InputTooLong]: { status: 400, type: ErrorType.InvalidRequest },
};

/** Errors of the reranker: none configured, another model named, the model not loadable, a pair too long. */
export class RankingException extends ApiError<RankingErrorCode> {
  constructor(code: RankingErrorCode, message: string, options?: ApiError['options']) {
    super(code, MAPPING[code], message, options);
  }
}
