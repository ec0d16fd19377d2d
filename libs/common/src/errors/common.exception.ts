import { ApiError, ErrorMapping, ErrorType } from './api-error';

export enum CommonErrorCode {
  ValidationFailed = 'validation_error',
  /** A field (or value) that would change the output and is not implemented. */
  UnsupportedParameter = 'unsupported_parameter',
  MalformedJson = 'malformed_json',
  InvalidBodyEncoding = 'invalid_body_encoding',
  NestingTooDeep = 'json_too_deep',
  InputTooLong = 'input_too_long',
  InputRejected = 'input_rejected',
  UnsupportedMediaType = 'unsupported_media_type',
  PayloadTooLarge = 'payload_too_large',
  RequestTimeout = 'request_timeout',
  RouteNotFound = 'route_not_found',
  MethodNotAllowed = 'method_not_allowed',
  ShuttingDown = 'shutting_down',
  Internal = 'internal_error',
}

const MAPPING: Record<CommonErrorCode, ErrorMapping> = {
  [CommonErrorCode.ValidationFailed]: { status: 400, type: ErrorType.InvalidRequest },
  [CommonErrorCode.UnsupportedParameter]: { status: 400, type: ErrorType.InvalidRequest },
  [CommonErrorCode.MalformedJson]: { status: 400, type: ErrorType.InvalidRequest },
  [CommonErrorCode.InvalidBodyEncoding]: { status: 400, type: ErrorType.InvalidRequest },
  [CommonErrorCode.NestingTooDeep]: { status: 400, type: ErrorType.InvalidRequest },
  [CommonErrorCode.InputTooLong]: { status: 400, type: ErrorType.InvalidRequest },
  [CommonErrorCode.InputRejected]: { status: 400, type: ErrorType.InvalidRequest },
  [CommonErrorCode.UnsupportedMediaType]: { status: 415, type: ErrorType.InvalidRequest },
  [CommonErrorCode.PayloadTooLarge]: { status: 413, type: ErrorType.InvalidRequest },
  [CommonErrorCode.RequestTimeout]: { status: 408, type: ErrorType.InvalidRequest },
  [CommonErrorCode.RouteNotFound]: { status: 404, type: ErrorType.NotFound },
  [CommonErrorCode.MethodNotAllowed]: { status: 405, type: ErrorType.InvalidRequest },
  [CommonErrorCode.ShuttingDown]: { status: 503, type: ErrorType.Unavailable },
  [CommonErrorCode.Internal]: { status: 500, type: ErrorType.Server },
};

/** Errors raised by the HTTP plumbing itself (parsing, validation, routing). */
export class CommonException extends ApiError<CommonErrorCode> {
  constructor(code: CommonErrorCode, message: string, options?: ApiError['options']) {
    super(code, MAPPING[code], message, options);
  }
}
