import 'reflect-metadata';
import { getMetadataStorage } from 'class-validator';
import { CommonErrorCode, CommonException } from '../errors/common.exception';

const POLICY = Symbol('fieldPolicy');

/** Top-level fields a body class refuses by name (with why), and whether unknown fields are refused too. */
export interface FieldPolicyOptions {
  /** Field → reason it is refused (a null value counts as absent). */
  readonly refused?: Record<string, string>;
  /** Refuse fields the class does not declare (OpenAI answers those with a 400 too). Default true. */
  readonly refuseUnknown?: boolean;
}

/**
 * Marks a request body class: a field that would change the output but is not implemented is a
 * 400 `unsupported_parameter` naming it, never silently dropped (the validation pipe strips
 * undeclared fields otherwise).
 */
export function FieldPolicy(options: FieldPolicyOptions): ClassDecorator {
  return (target) => Reflect.defineMetadata(POLICY, options, target);
}

const known = new WeakMap<object, Set<string>>();

/** Throws for the first refused or (when the class says so) undeclared top-level field of `body`. */
export function checkFieldPolicy(metatype: unknown, body: unknown): void {
  if (typeof metatype !== 'function' || body === null || typeof body !== 'object' || Array.isArray(body)) return;
  const policy = Reflect.getMetadata(POLICY, metatype) as FieldPolicyOptions | undefined;
  if (!policy) return;
  let declared = known.get(metatype);
  if (!declared) {
    declared = new Set(getMetadataStorage().getTargetValidationMetadatas(metatype as new () => object, '', true, false).map((m) => m.propertyName));
    known.set(metatype, declared);
  }
  for (const [field, value] of Object.entries(body)) {
    const reason = policy.refused?.[field];
    if (reason !== undefined && value !== null && value !== undefined) {
      throw new CommonException(CommonErrorCode.UnsupportedParameter, `${field} is not supported: ${reason}`, { param: field });
    }
    if ((policy.refuseUnknown ?? true) && reason === undefined && !declared.has(field)) {
      throw new CommonException(CommonErrorCode.UnsupportedParameter, `Unrecognized request argument supplied: ${field}`, { param: field });
    }
  }
}
