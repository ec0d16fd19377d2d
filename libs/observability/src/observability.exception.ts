import { ApiError, ErrorMapping, ErrorType } from '@app/common';

export enum ObservabilityErrorCode {
  /** Readiness failed: loading, draining, or a dependency down. */
  NotReady = 'not_ready',
  /** Startup has not completed (model loading) or failed. */
  NotStarted = 'not_started',
  /** Liveness failed: the process should be restarted. */
  NotAlive = 'not_alive',
}

const MAPPING: Record<ObservabilityErrorCode, ErrorMapping> = {
  [ObservabilityErrorCode.NotReady]: { status: 503, type: ErrorType.Unavailable },
  [ObservabilityErrorCode.NotStarted]: { status: 503, type: ErrorType.Unavailable },
  [ObservabilityErrorCode.NotAlive]: { status: 503, type: ErrorType.Unavailable },
};

/** Failed probes; `details` names each failed check (`field` = check name). */
export class ObservabilityException extends ApiError<ObservabilityErrorCode> {
  constructor(code: ObservabilityErrorCode, message: string, options?: ApiError['options']) {
    super(code, MAPPING[code], message, options);
  }
}
