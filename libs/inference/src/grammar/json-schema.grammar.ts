/**
 * JSON Schema → GBNF (llama.cpp's grammar format), written here rather than taken from
 * node-llama-cpp because the output must *end*: node-llama-cpp's JSON grammars require four
 * newlines and then allow any number after the value (its own chat loop stops on them), so a
 * caller that samples token by token gets whitespace until max_tokens. Here the root rule ends
 * with the value: once it is complete the grammar only admits end-of-generation, and the
 * generation stops by itself (finish_reason "stop").
 *
 * Enforced: type (and type lists), properties with `required` (required ones always present,
 * optional ones may be), additionalProperties (false: none; a schema or true: extra keys after
 * the listed ones), enum, const, anyOf/oneOf, allOf of objects, $ref into $defs/definitions
 * (recursion included), items, prefixItems, minItems/maxItems, minLength/maxLength, nullable,
 * integers without fraction or exponent, and the formats date, time, date-time and uuid. Not
 * enforced (the value keeps its type): minimum/maximum, multipleOf, pattern, other formats.
 * Refused: not, if/then/else.
 */

export class SchemaGrammarError extends Error {}

type Schema = Record<string, unknown>;

/** Whitespace between JSON tokens: bounded, so a model cannot fill max_tokens with it. */
const WS = '( [ ]? | [\\n] [ \\t]{0,16} )';
const CHAR = '[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})';
const INTEGER = '"-"? ("0" | [1-9] [0-9]{0,15})';
const NUMBER = `${INTEGER} ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?`;
const FORMATS: Record<string, string> = {
  date: '"\\"" [0-9]{4} "-" [0-1] [0-9] "-" [0-3] [0-9] "\\""',
  time: '"\\"" [0-2] [0-9] ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,6})? ("Z" | [-+] [0-2] [0-9] ":" [0-5] [0-9])? "\\""',
  'date-time':
    '"\\"" [0-9]{4} "-" [0-1] [0-9] "-" [0-3] [0-9] "T" [0-2] [0-9] ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,6})? ("Z" | [-+] [0-2] [0-9] ":" [0-5] [0-9]) "\\""',
  uuid: '"\\"" [0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12} "\\""',
};
/** Longest enumerated repetition written out (minItems/maxItems, min/maxLength). */
const MAX_BOUND = 256;

/** A GBNF string literal matching exactly `text`. */
export function gbnfLiteral(text: string): string {
  let out = '"';
  for (const ch of text) {
    const code = ch.codePointAt(0) as number;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/**
 * Builds one GBNF file from rules added while converting schemas; several schemas (the
 * arguments of several tools) can share one builder, so their rules never clash.
 */
export class GbnfBuilder {
  readonly #rules = new Map<string, string>();
  readonly #byBody = new Map<string, string>();
  #next = 0;
  readonly #refs = new Map<string, string>();

  /** A rule named after `hint` holding `body`; identical bodies share one rule. */
  rule(hint: string, body: string): string {
    const known = this.#byBody.get(body);
    if (known) return known;
    const name = `${hint.replace(/[^a-zA-Z0-9-]/g, '-').slice(0, 24) || 'r'}-${this.#next++}`;
    this.#rules.set(name, body);
    this.#byBody.set(body, name);
    return name;
  }

  /** Any JSON value (for schemas that say nothing about a value). */
  anyValue(): string {
    if (!this.#rules.has('any-value')) {
      this.#rules.set('any-value', 'any-object | any-array | json-string | json-number | "true" | "false" | "null"');
      this.#rules.set('any-object', `"{" ws ( json-string ws ":" ws any-value ( ws "," ws json-string ws ":" ws any-value )* )? ws "}"`);
      this.#rules.set('any-array', `"[" ws ( any-value ( ws "," ws any-value )* )? ws "]"`);
      this.#base();
    }
    return 'any-value';
  }

  /** The GBNF file with `root` as its root rule. */
  build(root: string): string {
    this.#base();
    return [`root ::= ${root}`, ...[...this.#rules].map(([name, body]) => `${name} ::= ${body}`)].join('\n');
  }

  /** Converts `schema` (its `$ref`s resolved against `document`) and returns an expression for it. */
  schema(schema: unknown, document: unknown = schema, path = '#'): string {
    this.#base();
    return new Converter(this, document).value(schema, path);
  }

  /** A rule for the target of `$ref` (made once: recursive schemas refer back to it). */
  ref(key: string, make: (name: string) => string): string {
    const known = this.#refs.get(key);
    if (known) return known;
    const name = `ref-${this.#next++}`;
    this.#refs.set(key, name);
    this.#rules.set(name, '""');
    this.#rules.set(name, make(name));
    return name;
  }

  #base(): void {
    if (this.#rules.has('ws')) return;
    this.#rules.set('ws', WS);
    this.#rules.set('json-char', CHAR);
    this.#rules.set('json-string', '"\\"" json-char* "\\""');
    this.#rules.set('json-number', NUMBER);
    this.#rules.set('json-integer', INTEGER);
  }
}

class Converter {
  constructor(
    private readonly g: GbnfBuilder,
    private readonly document: unknown,
  ) {}

  value(input: unknown, path: string): string {
    if (input === true || input === undefined) return this.g.anyValue();
    if (input === false) throw new SchemaGrammarError(`${path} is false: no value can match it`);
    if (typeof input !== 'object' || input === null || Array.isArray(input)) {
      throw new SchemaGrammarError(`${path} must be a JSON schema object`);
    }
    const s = input as Schema;
    for (const keyword of ['not', 'if', 'then', 'else']) {
      if (keyword in s) throw new SchemaGrammarError(`${path}: the "${keyword}" keyword is not supported`);
    }
    const nullable = s.nullable === true ? ' | "null"' : '';
    if (typeof s.$ref === 'string') return this.#wrap(this.#ref(s.$ref, path), nullable);
    if ('const' in s) return this.#wrap(gbnfLiteral(JSON.stringify(s.const)), nullable);
    if (Array.isArray(s.enum)) {
      if (s.enum.length === 0) throw new SchemaGrammarError(`${path}.enum is empty`);
      return this.#wrap(s.enum.map((v) => gbnfLiteral(JSON.stringify(v))).join(' | '), nullable);
    }
    const alternatives = (s.anyOf ?? s.oneOf) as unknown;
    if (alternatives !== undefined) {
      if (!Array.isArray(alternatives) || alternatives.length === 0) throw new SchemaGrammarError(`${path}.anyOf/oneOf must be a non-empty array`);
      const key = s.anyOf ? 'anyOf' : 'oneOf';
      const rest = { ...s };
      delete rest.anyOf;
      delete rest.oneOf;
      // Keywords beside anyOf (a description, a shared type) apply to every branch.
      const shared = Object.keys(rest).some((k) => !['description', 'title', 'default', 'examples', '$defs', 'definitions', '$schema', 'nullable'].includes(k));
      const branches = alternatives.map((alt, i) => this.value(shared ? { ...rest, ...(alt as Schema) } : alt, `${path}.${key}[${i}]`));
      return this.#wrap(branches.join(' | '), nullable);
    }
    if (Array.isArray(s.allOf)) return this.#wrap(this.value(this.#mergeAll(s, path), path), nullable);
    const type = s.type;
    if (Array.isArray(type)) {
      return this.#wrap(type.map((t) => this.#typed({ ...s, type: t }, t, path)).join(' | '), nullable);
    }
    if (type === undefined) {
      if (s.properties || s.additionalProperties !== undefined || s.required) return this.#wrap(this.#typed(s, 'object', path), nullable);
      if (s.items || s.prefixItems) return this.#wrap(this.#typed(s, 'array', path), nullable);
      return this.#wrap(this.g.anyValue(), nullable);
    }
    return this.#wrap(this.#typed(s, type, path), nullable);
  }

  #wrap(expr: string, nullable: string): string {
    return nullable ? `( ${expr}${nullable} )` : expr.includes('|') ? `( ${expr} )` : expr;
  }

  #typed(s: Schema, type: unknown, path: string): string {
    switch (type) {
      case 'string':
        return this.#string(s, path);
      case 'integer':
        return 'json-integer';
      case 'number':
        return 'json-number';
      case 'boolean':
        return '( "true" | "false" )';
      case 'null':
        return '"null"';
      case 'array':
        return this.#array(s, path);
      case 'object':
        return this.#object(s, path);
      default:
        throw new SchemaGrammarError(`${path}.type ${JSON.stringify(type)} is not a JSON schema type`);
    }
  }

  #string(s: Schema, path: string): string {
    if (typeof s.format === 'string' && FORMATS[s.format]) return this.g.rule(`format-${s.format}`, FORMATS[s.format]);
    const min = bound(s.minLength, 0, `${path}.minLength`);
    const max = s.maxLength === undefined ? undefined : bound(s.maxLength, min, `${path}.maxLength`);
    if (min === 0 && max === undefined) return 'json-string';
    return this.g.rule('string', `"\\"" json-char{${min},${max ?? ''}} "\\""`);
  }

  #array(s: Schema, path: string): string {
    const prefix = Array.isArray(s.prefixItems) ? s.prefixItems.map((p, i) => this.value(p, `${path}.prefixItems[${i}]`)) : [];
    const item = s.items === false ? null : this.value(s.items ?? true, `${path}.items`);
    const min = bound(s.minItems, 0, `${path}.minItems`);
    const max = s.maxItems === undefined ? undefined : bound(s.maxItems, min, `${path}.maxItems`);
    const sep = ' ws "," ws ';
    if (prefix.length) {
      const head = prefix.join(sep);
      const more = item && (max === undefined || max > prefix.length) ? `(${sep}${item})${repeat(0, max === undefined ? undefined : max - prefix.length)}` : '';
      const body = min === 0 ? `( ${head}${more ? ` ${more}` : ''} )?` : `${head}${more ? ` ${more}` : ''}`;
      return this.g.rule('tuple', `"[" ws ${body} ws "]"`);
    }
    if (!item) return '( "[" ws "]" )';
    if (max === 0) return '( "[" ws "]" )';
    const rest = `(${sep}${item})${repeat(Math.max(0, min - 1), max === undefined ? undefined : max - 1)}`;
    const body = min === 0 ? `( ${item} ${rest} )?` : `${item} ${rest}`;
    return this.g.rule('array', `"[" ws ${body} ws "]"`);
  }

  #object(s: Schema, path: string): string {
    const properties = (s.properties ?? {}) as Record<string, unknown>;
    if (typeof properties !== 'object' || Array.isArray(properties)) throw new SchemaGrammarError(`${path}.properties must be an object`);
    const required = new Set(Array.isArray(s.required) ? (s.required as unknown[]).filter((r): r is string => typeof r === 'string') : []);
    for (const name of required) {
      if (!(name in properties)) throw new SchemaGrammarError(`${path}.required names "${name}", which is not in properties`);
    }
    const names = Object.keys(properties);
    const pair = (name: string): string => `${gbnfLiteral(JSON.stringify(name))} ws ":" ws ${this.value(properties[name], `${path}.properties.${name}`)}`;
    const extra =
      s.additionalProperties === false || (names.length > 0 && s.additionalProperties === undefined)
        ? null
        : this.value(s.additionalProperties === undefined ? true : s.additionalProperties, `${path}.additionalProperties`);
    const extraPair = extra ? `json-string ws ":" ws ${extra}` : null;
    const sep = 'ws "," ws';
    const req = names.filter((n) => required.has(n));
    const opt = names.filter((n) => !required.has(n));
    let body: string;
    if (req.length) {
      // Required ones in order, then any of the optional ones (in order), then extra keys.
      const parts = [req.map(pair).join(` ${sep} `), ...opt.map((n) => `( ${sep} ${pair(n)} )?`)];
      if (extraPair) parts.push(`( ${sep} ${extraPair} )*`);
      body = parts.join(' ');
    } else {
      // Nothing required: any ordered subset of the optional ones, or nothing.
      const tails: string[] = [];
      let tail = extraPair ? `( ${sep} ${extraPair} )*` : '';
      for (let i = opt.length - 1; i >= 0; i--) {
        tails[i] = tail;
        tail = `( ${sep} ${pair(opt[i])} )? ${tail}`.trim();
      }
      const starts = opt.map((n, i) => `${pair(n)} ${tails[i]}`.trim());
      if (extraPair) starts.push(`${extraPair} ( ${sep} ${extraPair} )*`);
      body = starts.length ? `( ${starts.join(' | ')} )?` : '';
    }
    return this.g.rule('object', `"{" ws ${body}${body ? ' ' : ''}ws "}"`);
  }

  #ref(ref: string, path: string): string {
    if (!ref.startsWith('#')) throw new SchemaGrammarError(`${path}.$ref ${JSON.stringify(ref)}: only references inside the schema (#/…) are supported`);
    return this.g.ref(ref, () => {
      let target: unknown = this.document;
      for (const raw of ref.slice(1).split('/').filter(Boolean)) {
        const part = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
        target = target !== null && typeof target === 'object' ? (target as Record<string, unknown>)[part] : undefined;
        if (target === undefined) throw new SchemaGrammarError(`${path}.$ref ${JSON.stringify(ref)} points nowhere`);
      }
      return this.value(target, ref);
    });
  }

  #mergeAll(s: Schema, path: string): Schema {
    const merged: Schema = { ...s, type: 'object', properties: { ...((s.properties as object) ?? {}) }, required: [...((s.required as string[]) ?? [])] };
    delete merged.allOf;
    for (const [i, raw] of (s.allOf as unknown[]).entries()) {
      let part = raw as Schema;
      if (typeof part?.$ref === 'string') part = this.#resolve(part.$ref, `${path}.allOf[${i}]`);
      const isObject = part && typeof part === 'object' && (part.type === 'object' || (part.type === undefined && (part.properties || part.required)));
      if (!isObject) throw new SchemaGrammarError(`${path}.allOf[${i}]: allOf is supported for object schemas only`);
      Object.assign(merged.properties as object, part.properties ?? {});
      (merged.required as string[]).push(...((part.required as string[]) ?? []));
      if (part.additionalProperties === false) merged.additionalProperties = false;
    }
    return merged;
  }

  #resolve(ref: string, path: string): Schema {
    let target: unknown = this.document;
    for (const part of ref.slice(1).split('/').filter(Boolean)) {
      target = target !== null && typeof target === 'object' ? (target as Record<string, unknown>)[part] : undefined;
    }
    if (!target || typeof target !== 'object') throw new SchemaGrammarError(`${path}.$ref ${JSON.stringify(ref)} points nowhere`);
    return target as Schema;
  }
}

function bound(value: unknown, min: number, path: string): number {
  if (value === undefined) return min;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_BOUND) {
    throw new SchemaGrammarError(`${path} must be an integer from ${min} to ${MAX_BOUND}`);
  }
  return value;
}

function repeat(min: number, max: number | undefined): string {
  if (max === undefined) return min === 0 ? '*' : min === 1 ? '+' : `{${min},}`;
  return `{${min},${max}}`;
}

/** A GBNF grammar whose output is exactly one JSON value matching `schema`, and then nothing. */
export function grammarForJsonSchema(schema: unknown): string {
  const g = new GbnfBuilder();
  return g.build(g.schema(schema));
}

/** Any JSON object (OpenAI's json_object mode), and then nothing. */
export function grammarForJsonObject(): string {
  const g = new GbnfBuilder();
  g.anyValue();
  return g.build('any-object');
}
