import { ApiError, ErrorMapping, ErrorType } from '@app/common';

export enum AuthErrorCode {
  MissingKey = 'missing_api_key',
  InvalidKey = 'invalid_api_key',
  InsufficientScope = 'insufficient_scope',
}

const MAPPING: Record<AuthErrorCode, ErrorMapping> = {
  [AuthErrorCode.MissingKey]: { status: 401, type: ErrorType.Authentication },
  [AuthErrorCode.InvalidKey]: { status: 401, type: ErrorType.Authentication },
  [AuthErrorCode.InsufficientScope]: { status: 403, type: ErrorType.Permission },
};

export class AuthException extends ApiError<AuthErrorCode> {
  constructor(code: AuthErrorCode, message: string, options?: ApiError['options']) {
    super(code, MAPPING[code], message, {
      ...options,
      headers: code === AuthErrorCode.InsufficientScope ? options?.headers : { 'WWW-Authenticate': 'Bearer', ...options?.headers },
    });
  }
}
