import { ApiError, ErrorMapping, ErrorType } from '@app/common';
import { BatchingErrorCode, BatchingException } from '@app/batching';

/** HTTP for each scheduler error code; exhaustive, so a new code must choose its status here. */
const MAPPING: Record<BatchingErrorCode, ErrorMapping> = {
  [BatchingErrorCode.QueueFull]: { status: 429, type: ErrorType.RateLimit },
  [BatchingErrorCode.QueueTimeout]: { status: 503, type: ErrorType.Unavailable },
  [BatchingErrorCode.ShuttingDown]: { status: 503, type: ErrorType.Unavailable },
  [BatchingErrorCode.DeadlineExceeded]: { status: 504, type: ErrorType.Server },
  // Only the client that went away could see it; 499 is nginx's "client closed request".
  [BatchingErrorCode.Cancelled]: { status: 499, type: ErrorType.InvalidRequest },
  // The inference layer checks sizes first; this guards the scheduler against a bad caller.
  [BatchingErrorCode.InvalidJob]: { status: 400, type: ErrorType.InvalidRequest },
};

/** A scheduler error as the API answers it: status and type by code, Retry-After from its data. */
export class SchedulerHttpError extends ApiError<BatchingErrorCode> {
  constructor(error: BatchingException) {
    const retryAfter = error.data.retryAfterSeconds;
    super(error.code, MAPPING[error.code], error.message, {
      headers: retryAfter === undefined ? undefined : { 'Retry-After': String(retryAfter) },
      cause: error,
    });
  }
}

/** For registerErrorTranslator: scheduler errors only. */
export function translateBatchingError(exception: unknown): ApiError | undefined {
  return exception instanceof BatchingException ? new SchedulerHttpError(exception) : undefined;
}
