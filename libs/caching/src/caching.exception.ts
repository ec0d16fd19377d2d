import { ApiError, ErrorMapping, ErrorType } from '@app/common';

export enum CachingErrorCode {
  InvalidDirective = 'invalid_cache_directive',
  InvalidLayer = 'invalid_cache_layer',
}

const MAPPING: Record<CachingErrorCode, ErrorMapping> = {
  [CachingErrorCode.InvalidDirective]: { status: 400, type: ErrorType.InvalidRequest },
  [CachingErrorCode.InvalidLayer]: { status: 400, type: ErrorType.InvalidRequest },
};

/** Client mistakes about the caches. Cache failures are never errors: they fall through to the model. */
export class CachingException extends ApiError<CachingErrorCode> {
  constructor(code: CachingErrorCode, message: string, options?: ApiError['options']) {
    super(code, MAPPING[code], message, options);
  }
}
