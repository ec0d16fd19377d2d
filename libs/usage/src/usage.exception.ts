import { ApiError, ErrorMapping, ErrorType } from '@app/common';

export enum UsageErrorCode {
  BudgetExceeded = 'budget_exceeded',
  BudgetUnavailable = 'budget_unavailable',
  InvalidUsageQuery = 'invalid_usage_query',
}

const MAPPING: Record<UsageErrorCode, ErrorMapping> = {
  [UsageErrorCode.BudgetExceeded]: { status: 429, type: ErrorType.RateLimit },
  [UsageErrorCode.BudgetUnavailable]: { status: 503, type: ErrorType.Unavailable },
  [UsageErrorCode.InvalidUsageQuery]: { status: 400, type: ErrorType.InvalidRequest },
};

/** Errors of budgets and usage reports. */
export class UsageException extends ApiError<UsageErrorCode> {
  constructor(code: UsageErrorCode, message: string, options?: ApiError['options']) {
    super(code, MAPPING[code], message, options);
  }
}
