import { CommonErrorCode, CommonException } from '@app/common';
import { MAX_TEXT } from '../openai/openai.dto';

/**
 * Checks the request mappers make on what class-validator cannot describe (polymorphic input
 * items, content blocks), with the field's full path in the 400, as the validation pipe names it.
 */

/** A 400 `validation_error` naming `param`. */
export function invalidField(param: string, message: string): CommonException {
  return new CommonException(CommonErrorCode.ValidationFailed, message, { param, details: [{ field: param, message }] });
}

/** A 400 `unsupported_parameter` naming `param`: valid for the API, not implemented here. */
export function unsupportedField(param: string, message: string): CommonException {
  return new CommonException(CommonErrorCode.UnsupportedParameter, message, { param });
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `value` as a string of at most MAX_TEXT characters, else a 400 naming `param`. */
export function textField(value: unknown, param: string): string {
  if (typeof value !== 'string') throw invalidField(param, `${param} must be a string`);
  if (value.length > MAX_TEXT) throw invalidField(param, `${param} must be at most ${MAX_TEXT} characters`);
  return value;
}
