import { ApiError, ErrorMapping, ErrorType } from '@app/common';

export enum BatchingErrorCode {
  QueueFull = 'queue_full',
  QueueTimeout = 'queue_timeout',
  ShuttingDown = 'shutting_down',
  DeadlineExceeded = 'deadline_exceeded',
  Cancelled = 'request_cancelled',
  InvalidJob = 'invalid_job',
}

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

export class BatchingException extends ApiError<BatchingErrorCode> {
  constructor(code: BatchingErrorCode, message: string, options?: ApiError['options']) {
    super(code, MAPPING[code], message, options);
  }
}
