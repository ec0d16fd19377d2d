import { ArgumentMetadata, ValidationError, ValidationPipe } from '@nestjs/common';
import type { ValidationPipeOptions } from '@nestjs/common';
import { LruMap } from '../collections/lru.map';
import { CommonErrorCode, CommonException } from '../errors/common.exception';
import { jsonSourceOf } from './json-body.middleware';
import { checkFieldPolicy } from '../validation/field-policy';

/** Bodies remembered per DTO class once validated, and the longest body text remembered. */
const MEMO_ENTRIES = 256;
const MEMO_MAX_CHARS = 8192;

/** A deep copy that keeps each object's class (DTO instances stay DTO instances). */
function copyOf<T>(value: T): T {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(copyOf) as T;
  const copy = Object.create(Object.getPrototypeOf(value) as object | null) as Record<string, unknown>;
  for (const key of Object.keys(value)) {
    const item = copyOf((value as Record<string, unknown>)[key]);
    // JSON.parse makes "__proto__" an own key (free-form objects such as a JSON schema keep it);
    // an assignment would set the copy's prototype instead.
    if (key === '__proto__') Object.defineProperty(copy, key, { value: item, enumerable: true, writable: true, configurable: true });
    else copy[key] = item;
  }
  return copy as T;
}

const FREE_FORM = Symbol('validation:free-form');

/**
 * Declares fields of a body DTO (dotted paths from it, e.g. `response_format.json_schema.schema`;
 * `*` stands for every item of an array, e.g. `tools.*.function.parameters`) that hold free-form
 * JSON objects, such as a JSON schema: validated as objects, but handed over as parsed instead of
 * being copied and walked by class-transformer and Nest's body sanitizers. A megabyte schema cost
 * about 100 ms of event loop in those copies.
 */
export function FreeFormFields(...paths: string[]): ClassDecorator {
  return (target) => Reflect.defineMetadata(FREE_FORM, paths.map((p) => p.split('.')), target);
}

/** The concrete paths (array indexes in place of `*`) of `path` in `value` whose parent is an object. */
function expand(value: unknown, path: string[], prefix: string[] = []): string[][] {
  if (path.length === 1) return [[...prefix, path[0]]];
  if (value === null || typeof value !== 'object') return [];
  const [head, ...rest] = path;
  if (head === '*') {
    return Array.isArray(value) ? value.flatMap((item, i) => expand(item, rest, [...prefix, String(i)])) : [];
  }
  return Object.prototype.hasOwnProperty.call(value, head) ? expand((value as Record<string, unknown>)[head], rest, [...prefix, head]) : [];
}

function parentOf(root: unknown, path: string[]): Record<string, unknown> | undefined {
  let parent: unknown = root;
  for (const key of path.slice(0, -1)) parent = parent !== null && typeof parent === 'object' ? (parent as Record<string, unknown>)[key] : undefined;
  return parent !== null && typeof parent === 'object' ? (parent as Record<string, unknown>) : undefined;
}

/** Takes each declared free-form object out of `body` (a `{}` stands in for validation); returns them by path. */
function detachFreeForm(body: unknown, dto: object): [string[], object][] {
  const paths = Reflect.getMetadata(FREE_FORM, dto) as string[][] | undefined;
  if (!paths || body === null || typeof body !== 'object') return [];
  const detached: [string[], object][] = [];
  for (const path of paths.flatMap((p) => expand(body, p))) {
    const parent = parentOf(body, path);
    const leaf = path[path.length - 1];
    if (!parent || Array.isArray(parent) || !Object.prototype.hasOwnProperty.call(parent, leaf)) continue;
    const value = parent[leaf];
    if (value === null || typeof value !== 'object' || Array.isArray(value)) continue;
    detached.push([path, value]);
    parent[leaf] = {};
  }
  return detached;
}

/** Puts the detached objects back, into the body and into the DTO built from it. */
function reattachFreeForm(targets: unknown[], detached: [string[], object][]): void {
  for (const [path, value] of detached) {
    for (const target of targets) {
      const parent = parentOf(target, path);
      if (parent) parent[path[path.length - 1]] = value;
    }
  }
}

/**
 * Nest's ValidationPipe that remembers the DTOs it built from recent body texts. Validation and
 * transformation are a pure function of the JSON text and the DTO class, and class-validator is
 * the largest cost left on a small request: a repeated request (an exact-cache hit, a retry) gets
 * a copy of the DTO built the first time instead of validating again. Only bodies that passed
 * are remembered; each caller gets its own copy, so nothing is shared between requests.
 */
class MemoizingValidationPipe extends ValidationPipe {
  readonly #memo = new WeakMap<object, LruMap<unknown>>();

  constructor(options: ValidationPipeOptions) {
    super(options);
  }

  override async transform(value: unknown, metadata: ArgumentMetadata): Promise<unknown> {
    const dto = metadata.type === 'body' && metadata.data === undefined && this.toValidate(metadata) ? metadata.metatype : undefined;
    const text = dto ? jsonSourceOf(value) : undefined;
    if (!dto || text === undefined || text.length > MEMO_MAX_CHARS) {
      if (dto) checkFieldPolicy(dto, value);
      const detached = dto ? detachFreeForm(value, dto) : [];
      if (detached.length === 0) return super.transform(value, metadata);
      try {
        const result: unknown = await super.transform(value, metadata);
        reattachFreeForm([value, result], detached);
        return result;
      } catch (err) {
        reattachFreeForm([value], detached);
        throw err;
      }
    }
    let memo = this.#memo.get(dto);
    const known = memo?.get(text);
    if (known !== undefined) return copyOf(known);
    checkFieldPolicy(dto, value);
    const result: unknown = await super.transform(value, metadata);
    if (!memo) this.#memo.set(dto, (memo = new LruMap(MEMO_ENTRIES)));
    memo.set(text, copyOf(result));
    return result;
  }
}

/**
 * Constraints that say what a field must be (its type or its set of values). When a value breaks
 * one of them, its other constraints (`must not be greater than 2048` for the string `"5"`) are
 * consequences, not the problem.
 */
const TYPE_CONSTRAINTS = new Set([
  'isDefined', 'isInt', 'isNumber', 'isString', 'isBoolean', 'isArray', 'isObject', 'isIn', 'isEnum', 'equals',
  'isStringOrStringArray', 'isMessageContent', 'isFlatMetadata', 'nestedValidation', 'whitelistValidation', 'unknownValue',
]);

/**
 * The one message reported for a field: its type constraint when it breaks one, else the first
 * rule it breaks in the order the DTO declares them (class-validator lists constraints in reverse
 * declaration order, since decorators apply bottom-up).
 */
function messageOf(constraints: Record<string, string>): string | undefined {
  const names = Object.keys(constraints);
  const type = names.find((n) => TYPE_CONSTRAINTS.has(n));
  const name = type ?? names[names.length - 1];
  return name === undefined ? undefined : constraints[name];
}

function flatten(errors: ValidationError[], parent = ''): { field: string; message: string }[] {
  return errors.flatMap((e) => {
    const field = parent ? `${parent}.${e.property}` : e.property;
    const message = messageOf(e.constraints ?? {});
    // class-validator words messages with the bare property; name the full path instead.
    const own = message === undefined ? [] : [{ field, message: parent ? message.replace(new RegExp(`^${e.property}\\b`), field) : message }];
    return [...own, ...flatten(e.children ?? [], field)];
  });
}

/**
 * Strict validation for every body: no implicit type coercion (`"5"` is not a number), unknown
 * fields stripped, and a 400 envelope that names each bad field with one message: what type it
 * must be when it has the wrong one, else the first rule it breaks.
 */
export function createValidationPipe(): ValidationPipe {
  return new MemoizingValidationPipe({
    transform: true,
    whitelist: true,
    forbidUnknownValues: true,
    // Every rule is checked (stopAtFirstError would stop at the last-declared one: a string "5"
    // for max_tokens was reported as "must not be greater than 2048"); messageOf() then reports
    // one message per field, its type first.
    stopAtFirstError: false,
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
