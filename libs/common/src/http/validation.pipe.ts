import { ValidationError, ValidationPipe } from '@nestjs/common';
import { CommonErrorCode, CommonException } from '../errors/common.exception';

function flatten(errors: ValidationError[], parent = ''): { field: string; message: string }[] {
  return errors.flatMap((e) => {
    const field = parent ? `${parent}.${e.property}` : e.property;
    const own = Object.values(e.constraints ?? {}).map((message) => ({
      field,
      // class-validator words messages with the bare property; name the full path instead.
      message: parent ? message.replace(new RegExp(`^${e.property}\\b`), field) : message,
    }));
    return [...own, ...flatten(e.children ?? [], field)];
  });
}

/**
 * Strict validation for every body: no implicit type coercion (`"5"` is not a number), unknown
 * fields stripped, and a 400 envelope that names each bad field.
 */
export function createValidationPipe(): ValidationPipe {
  return new ValidationPipe({
    transform: true,
    whitelist: true,
    forbidUnknownValues: true,
    // One message per field: the first rule it breaks, not a pile of consequences.
    stopAtFirstError: true,
    transformOptions: { enableImplicitConversion: false },
    validationError: { target: false, value: false },
    exceptionFactory: (errors) => {
      const details = flatten(errors);
      const message = details.length
        ? details.map((d) => d.message).join('; ')
        : 'Request body must be a JSON object';
      return new CommonException(CommonErrorCode.ValidationFailed, message, {
        param: details[0]?.field ?? null,
        details,
      });
    },
  });
}
