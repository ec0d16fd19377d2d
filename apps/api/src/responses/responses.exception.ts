import { ApiError, ErrorMapping, ErrorType } from '@app/common';

export enum ResponsesErrorCode {
  ResponseNotFound = 'response_not_found',
  PreviousResponseNotFound = 'previous_response_not_found',
  ItemNotFound = 'item_not_found',
  StoreUnavailable = 'response_store_unavailable',
}

const MAPPING: Record<ResponsesErrorCode, ErrorMapping> = {
  [ResponsesErrorCode.ResponseNotFound]: { status: 404, type: ErrorType.NotFound },
  [ResponsesErrorCode.PreviousResponseNotFound]: { status: 404, type: ErrorType.NotFound },
  [ResponsesErrorCode.ItemNotFound]: { status: 404, type: ErrorType.NotFound },
  [ResponsesErrorCode.StoreUnavailable]: { status: 503, type: ErrorType.Unavailable },
};

/** Errors of the Responses API routes: stored responses and items that are not there (or not the caller's). */
export class ResponsesException extends ApiError<ResponsesErrorCode> {
  constructor(code: ResponsesErrorCode, message: string, options?: ApiError['options']) {
    super(code, MAPPING[code], message, options);
  }
}
