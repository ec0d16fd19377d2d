/** Why the scheduler refused or ended a request. Stable: the API maps each to a status and type. */
export enum BatchingErrorCode {
  QueueFull = 'queue_full',
  QueueTimeout = 'queue_timeout',
  ShuttingDown = 'shutting_down',
  DeadlineExceeded = 'deadline_exceeded',
  Cancelled = 'request_cancelled',
  InvalidJob = 'invalid_job',
}

/** Facts a caller may pass on (the API turns `retryAfterSeconds` into a Retry-After header). */
export interface BatchingErrorData {
  /** When trying again has a chance: estimated from the queue and recent request durations. */
  readonly retryAfterSeconds?: number;
}

/**
 * The scheduler's typed error: a code and data, no transport. HTTP status codes and headers are
 * chosen in apps/api (errors/batching-error.mapping.ts).
 */
export class BatchingException extends Error {
  constructor(
    readonly code: BatchingErrorCode,
    message: string,
    readonly data: BatchingErrorData = {},
  ) {
    super(message);
    this.name = 'BatchingException';
  }
}
