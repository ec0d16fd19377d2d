import { ApiError, ErrorMapping, ErrorType } from '@app/common';

export enum AuthErrorCode {
  MissingKey = 'missing_api_key',
  InvalidKey = 'invalid_api_key',
  RevokedKey = 'api_key_revoked',
  ExpiredKey = 'api_key_expired',
  InsufficientScope = 'insufficient_scope',
  /** The key is limited to other models. */
  ModelNotAllowed = 'model_not_allowed',
  KeyStoreUnavailable = 'key_store_unavailable',
  RequestsRateLimited = 'rate_limit_exceeded',
  TokensRateLimited = 'token_rate_limit_exceeded',
  ConcurrencyLimited = 'concurrency_limit_exceeded',
  RateLimiterUnavailable = 'rate_limiter_unavailable',
  KeyNotFound = 'api_key_not_found',
  KeyNameTaken = 'api_key_name_taken',
  InvalidKeyOptions = 'invalid_key_options',
}

const MAPPING: Record<AuthErrorCode, ErrorMapping> = {
  [AuthErrorCode.MissingKey]: { status: 401, type: ErrorType.Authentication },
  [AuthErrorCode.InvalidKey]: { status: 401, type: ErrorType.Authentication },
  [AuthErrorCode.RevokedKey]: { status: 401, type: ErrorType.Authentication },
  [AuthErrorCode.ExpiredKey]: { status: 401, type: ErrorType.Authentication },
  [AuthErrorCode.InsufficientScope]: { status: 403, type: ErrorType.Permission },
  [AuthErrorCode.ModelNotAllowed]: { status: 403, type: ErrorType.Permission },
  [AuthErrorCode.KeyStoreUnavailable]: { status: 503, type: ErrorType.Unavailable },
  [AuthErrorCode.RequestsRateLimited]: { status: 429, type: ErrorType.RateLimit },
  [AuthErrorCode.TokensRateLimited]: { status: 429, type: ErrorType.RateLimit },
  [AuthErrorCode.ConcurrencyLimited]: { status: 429, type: ErrorType.RateLimit },
  [AuthErrorCode.RateLimiterUnavailable]: { status: 503, type: ErrorType.Unavailable },
  [AuthErrorCode.KeyNotFound]: { status: 404, type: ErrorType.NotFound },
  [AuthErrorCode.KeyNameTaken]: { status: 409, type: ErrorType.InvalidRequest },
  [AuthErrorCode.InvalidKeyOptions]: { status: 400, type: ErrorType.InvalidRequest },
};

/** Errors of authentication, key management and rate limiting. */
export class AuthException extends ApiError<AuthErrorCode> {
  constructor(code: AuthErrorCode, message: string, options?: ApiError['options']) {
    const challenge: Record<string, string> = MAPPING[code].status === 401 ? { 'WWW-Authenticate': 'Bearer' } : {};
    super(code, MAPPING[code], message, { ...options, headers: { ...challenge, ...options?.headers } });
  }
}
