import { registerDecorator, ValidationArguments, ValidationOptions } from 'class-validator';

export interface StringOrArrayOptions {
  /** Longest accepted string. */
  maxLength: number;
  /** Most accepted array items. */
  maxItems: number;
  /** Whether an empty string (or empty array) is accepted. Default false. */
  allowEmpty?: boolean;
}

/** `string | string[]`, a union class-validator has no decorator for (OpenAI's `stop`, `input`). */
export function IsStringOrStringArray(limits: StringOrArrayOptions, options?: ValidationOptions): PropertyDecorator {
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isStringOrStringArray',
      target: object.constructor,
      propertyName: propertyName as string,
      options,
      validator: {
        validate(value: unknown): boolean {
          const ok = (s: unknown): boolean =>
            typeof s === 'string' && s.length <= limits.maxLength && (limits.allowEmpty || s.length > 0);
          if (typeof value === 'string') return ok(value);
          return Array.isArray(value) && value.length <= limits.maxItems && (limits.allowEmpty || value.length > 0) && value.every(ok);
        },
        defaultMessage(args: ValidationArguments): string {
          return `${args.property} must be a ${limits.allowEmpty ? '' : 'non-empty '}string of at most ${limits.maxLength} characters or an array of at most ${limits.maxItems} such strings`;
        },
      },
    });
}

/** Normalises the union to an array. */
export function asArray(value: string | string[] | undefined | null): string[] {
  if (value === undefined || value === null) return [];
  return typeof value === 'string' ? [value] : value;
}
