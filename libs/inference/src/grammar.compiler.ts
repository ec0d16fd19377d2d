import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { InferenceErrorCode, InferenceException } from './inference.exception';

/** What a response_format schema may hold (SCHEMA_MAX_* variables; defaults follow OpenAI's structured-output limits). */
export interface SchemaLimits {
  /** Serialized JSON size of the schema (default 64 KiB). */
  readonly maxBytes: number;
  /** `enum` values (and `const`s) in the whole schema (default 1,000). */
  readonly maxEnumValues: number;
  /** Nesting of subschemas: properties, items, anyOf/oneOf/allOf, $defs… (default 10). */
  readonly maxDepth: number;
  /** Object properties in the whole schema (default 1,000). */
  readonly maxProperties: number;
}

/**
 * Largest GBNF grammar accepted, whatever the schema limits say. llama.cpp parses a grammar
 * synchronously, on the event loop, when it is compiled and again for every request that uses it
 * (its evaluation state): measured on the bundled model, about 1 ms and 1 ms per 37 KB of grammar
 * (see docs/RELIABILITY.md). 192 KiB keeps both well under the 100 ms a liveness probe may wait.
 */
export const MAX_GRAMMAR_BYTES = 192 * 1024;
/** Longest a schema → GBNF conversion may run in the worker before it counts as too complex. */
export const GRAMMAR_COMPILE_TIMEOUT_MS = 5000;
/** Compiled grammars kept (LRU), bounded in count and in grammar text (native memory follows it). */
export const GRAMMAR_CACHE_MAX_ENTRIES = 256;
export const GRAMMAR_CACHE_MAX_BYTES = 16 * 1024 * 1024;
/** The conversion worker exits after this long without work (it is started again on demand). */
const WORKER_IDLE_MS = 30_000;

const SUBSCHEMA_MAPS = ['properties', '$defs', 'definitions', 'patternProperties', 'dependentSchemas'];
const SUBSCHEMA_LISTS = ['anyOf', 'oneOf', 'allOf', 'prefixItems'];
const SUBSCHEMA_ONE = ['items', 'additionalProperties', 'not', 'contains', 'if', 'then', 'else', 'unevaluatedProperties', 'unevaluatedItems'];

function tooComplex(message: string, param = 'response_format'): InferenceException {
  return new InferenceException(InferenceErrorCode.SchemaTooComplex, `${param} schema is too complex: ${message}`, { param });
}

function unsupported(message: string, param: string): InferenceException {
  return new InferenceException(InferenceErrorCode.UnsupportedSchema, `${param} schema is not supported: ${message}`, { param });
}

/**
 * Measures a schema against the limits without recursion (a hostile schema may be deep) and throws
 * a 400 `schema_too_complex` naming the first limit it breaks. Linear in the schema's size.
 * Returns the schema's JSON text.
 */
export function checkSchemaComplexity(schema: object, limits: SchemaLimits, param = 'response_format'): string {
  // The schema-limits middleware and the grammar compiler check the same parsed object, one
  // after the other: the second check of a large schema costs nothing.
  const known = checked.get(schema);
  if (known && known.limits === limits) return known.text;
  let enums = 0;
  let properties = 0;
  const stack: [unknown, number][] = [[schema, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== 'object' || Array.isArray(node)) continue;
    if (depth > limits.maxDepth) throw tooComplex(`subschemas nested ${depth} deep; at most ${limits.maxDepth} (SCHEMA_MAX_DEPTH)`, param);
    const s = node as Record<string, unknown>;
    if (Array.isArray(s.enum)) enums += s.enum.length;
    if ('const' in s) enums += 1;
    if (enums > limits.maxEnumValues) throw tooComplex(`more than ${limits.maxEnumValues} enum/const values (SCHEMA_MAX_ENUM_VALUES)`, param);
    for (const key of SUBSCHEMA_MAPS) {
      const map = s[key];
      if (map === null || typeof map !== 'object' || Array.isArray(map)) continue;
      const children = Object.values(map);
      if (key === 'properties') properties += children.length;
      for (const child of children) stack.push([child, depth + 1]);
    }
    if (properties > limits.maxProperties) throw tooComplex(`more than ${limits.maxProperties} object properties (SCHEMA_MAX_PROPERTIES)`, param);
    for (const key of SUBSCHEMA_LISTS) if (Array.isArray(s[key])) for (const child of s[key] as unknown[]) stack.push([child, depth + 1]);
    for (const key of SUBSCHEMA_ONE) {
      const child = s[key];
      if (Array.isArray(child)) for (const c of child) stack.push([c, depth + 1]);
      else if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
    }
  }
  // After the walk: JSON.stringify recurses, and the depth limit keeps it within the stack.
  const text = JSON.stringify(schema);
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > limits.maxBytes) throw tooComplex(`${bytes} bytes of JSON; at most ${limits.maxBytes} (SCHEMA_MAX_BYTES)`, param);
  checked.set(schema, { limits, text });
  return text;
}

/** Schemas that passed checkSchemaComplexity, with the limits they passed and their JSON text (a schema object is not changed once parsed). */
const checked = new WeakMap<object, { limits: SchemaLimits; text: string }>();

/**
 * The JSON-schema → GBNF converter (json-schema.grammar.ts, free of imports) as the worker loads
 * it: the compiled file next to this one, or, when this runs from the TypeScript sources (a test
 * runner), the source, transpiled by the worker itself.
 */
function converterModule(): { file: string; typescript?: string } {
  const compiled = join(__dirname, 'grammar', 'json-schema.grammar.js');
  if (existsSync(compiled)) return { file: compiled };
  return { file: join(__dirname, 'grammar', 'json-schema.grammar.ts'), typescript: require.resolve('typescript') };
}

/** The conversion worker's code (CommonJS, evaluated). One conversion at a time; answers carry the job id. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
let converter;
function load() {
  if (!workerData.typescript) return require(workerData.file);
  const ts = require(workerData.typescript);
  const source = require('node:fs').readFileSync(workerData.file, 'utf8');
  const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 } }).outputText;
  const m = { exports: {} };
  new Function('exports', 'require', 'module', js)(m.exports, require, m);
  return m.exports;
}
parentPort.on('message', ({ id, schema, maxBytes }) => {
  try {
    converter ??= load();
    const gbnf = converter.grammarForJsonSchema(JSON.parse(schema));
    const bytes = Buffer.byteLength(gbnf, 'utf8');
    // An oversized grammar is not even sent back: copying it to the event loop has a cost too.
    parentPort.postMessage(bytes > maxBytes ? { id, tooLarge: bytes } : { id, gbnf });
  } catch (err) {
    parentPort.postMessage({ id, error: String((err && err.message) || err) });
  }
});`;

interface Job {
  readonly id: number;
  /** The schema's JSON text: a string crosses to the worker far cheaper than a cloned object. */
  readonly schema: string;
  readonly param: string;
  resolve(gbnf: string): void;
  reject(err: Error): void;
}

function grammarTooLarge(bytes: number, param: string): InferenceException {
  return tooComplex(`its grammar would have ${bytes} bytes; at most ${MAX_GRAMMAR_BYTES}`, param);
}

/**
 * Runs JSON-schema → GBNF conversions on a worker thread, one after another, each bounded by
 * GRAMMAR_COMPILE_TIMEOUT_MS (past it the worker is terminated and the schema refused). The
 * conversion is plain JavaScript whose cost grows with the schema (a 1 MB enum took ~0.3 s here,
 * and far longer on a loaded machine): on the event loop it froze every other request and probe.
 */
export class GrammarWorker {
  readonly #module = converterModule();
  #worker: Worker | null = null;
  #idle: NodeJS.Timeout | undefined;
  #queue: Job[] = [];
  #running: { job: Job; timer: NodeJS.Timeout } | null = null;
  #nextId = 1;

  constructor(readonly timeoutMs = GRAMMAR_COMPILE_TIMEOUT_MS) {}

  /**
   * GBNF for a schema given as JSON text. Rejects with a 400 `schema_too_complex` past
   * MAX_GRAMMAR_BYTES or the deadline, `unsupported_schema` when the converter refuses it.
   */
  convert(schema: string, param = 'response_format'): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      this.#queue.push({ id: this.#nextId++, schema, param, resolve, reject });
      this.#pump();
    });
  }

  /** Stops the worker; queued conversions fail. */
  async close(): Promise<void> {
    clearTimeout(this.#idle);
    const pending = [...this.#queue, ...(this.#running ? [this.#running.job] : [])];
    this.#queue = [];
    if (this.#running) clearTimeout(this.#running.timer);
    this.#running = null;
    for (const job of pending) job.reject(new Error('grammar worker closed'));
    await this.#worker?.terminate();
    this.#worker = null;
  }

  #pump(): void {
    if (this.#running || this.#queue.length === 0) return;
    clearTimeout(this.#idle);
    const job = this.#queue.shift()!;
    const worker = this.#ensureWorker();
    const timer = setTimeout(() => {
      // A conversion that runs away cannot be interrupted: the worker goes, a fresh one takes the next job.
      this.#running = null;
      this.#worker = null;
      void worker.terminate();
      job.reject(tooComplex(`converting it to a grammar took longer than ${this.timeoutMs} ms`, job.param));
      this.#pump();
    }, this.timeoutMs);
    this.#running = { job, timer };
    worker.postMessage({ id: job.id, schema: job.schema, maxBytes: MAX_GRAMMAR_BYTES });
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: this.#module });
    // Never keeps the process alive: shutdown does not wait for an idle converter.
    worker.unref();
    worker.on('message', (msg: { id: number; gbnf?: string; tooLarge?: number; error?: string }) => {
      const running = this.#running;
      if (!running || running.job.id !== msg.id) return;
      clearTimeout(running.timer);
      this.#running = null;
      const { job } = running;
      if (msg.gbnf !== undefined) job.resolve(msg.gbnf);
      else if (msg.tooLarge !== undefined) job.reject(grammarTooLarge(msg.tooLarge, job.param));
      // The converter's refusals (SchemaGrammarError: `not`, if/then/else, a $ref it cannot resolve)
      // and its failures on a hostile schema alike: the client's schema is the cause.
      else job.reject(unsupported(msg.error ?? 'conversion failed', job.param));
      this.#afterJob();
    });
    worker.on('error', (err) => {
      if (this.#worker === worker) this.#worker = null;
      const running = this.#running;
      if (running) {
        clearTimeout(running.timer);
        this.#running = null;
        running.job.reject(err);
      }
      this.#afterJob();
    });
    worker.on('exit', () => {
      if (this.#worker === worker) this.#worker = null;
    });
    this.#worker = worker;
    return worker;
  }

  #afterJob(): void {
    if (this.#queue.length > 0) return this.#pump();
    clearTimeout(this.#idle);
    this.#idle = setTimeout(() => {
      const worker = this.#worker;
      this.#worker = null;
      void worker?.terminate();
    }, WORKER_IDLE_MS);
    this.#idle.unref();
  }
}

/** Turns GBNF text into the runtime's compiled grammar (llama.createGrammar); synchronous native parse. */
export type GrammarParser = (gbnf: string) => Promise<unknown>;

interface CacheEntry {
  readonly grammar: Promise<unknown>;
  bytes: number;
}

/**
 * Output grammars (structured output, tool calls): schema limits checked first (a 400
 * `schema_too_complex` costs microseconds), a schema's conversion to GBNF on a worker thread, a
 * cap on every grammar's size (the native parse that follows runs on the event loop, and again for
 * each request's grammar state), and a cache of compiled grammars by SHA-256, bounded in entries
 * and in bytes. Concurrent requests for one grammar share one compilation.
 */
export class GrammarCompiler {
  readonly #cache = new Map<string, CacheEntry>();
  #bytes = 0;
  readonly #worker: GrammarWorker;

  constructor(
    private readonly limits: SchemaLimits,
    private readonly parse: GrammarParser,
    worker?: GrammarWorker,
  ) {
    this.#worker = worker ?? new GrammarWorker();
  }

  /** Grammar text held by the cache (for tests and stats). */
  get cachedBytes(): number {
    return this.#bytes;
  }

  get cachedEntries(): number {
    return this.#cache.size;
  }

  /** Throws 400 `schema_too_complex` when `schema` breaks SCHEMA_MAX_*; returns its JSON text. */
  check(schema: object, param = 'response_format'): string {
    return checkSchemaComplexity(schema, this.limits, param);
  }

  /** The compiled grammar for a JSON schema (converted on the worker); 400 for schemas it refuses. */
  compileSchema(schema: object, param = 'response_format'): Promise<unknown> {
    const text = this.check(schema, param);
    return this.#cached(`schema:${text}`, async () => this.#parse(await this.#worker.convert(text, param), param));
  }

  /** A grammar written elsewhere (any JSON object, tool calls): size cap, parse, cache. */
  compileGbnf(gbnf: string, param: string): Promise<unknown> {
    return this.#cached(`gbnf:${gbnf}`, () => this.#parse(gbnf, param));
  }

  close(): Promise<void> {
    return this.#worker.close();
  }

  #cached(text: string, build: () => Promise<{ grammar: unknown; bytes: number }>): Promise<unknown> {
    const key = createHash('sha256').update(text).digest('hex');
    const cached = this.#cache.get(key);
    if (cached) {
      // Most recently used last.
      this.#cache.delete(key);
      this.#cache.set(key, cached);
      return cached.grammar;
    }
    const entry: CacheEntry = { grammar: Promise.resolve(), bytes: 0 };
    const grammar = build().then(
      ({ grammar, bytes }) => {
        if (this.#cache.get(key) === entry) {
          entry.bytes = bytes;
          this.#bytes += bytes;
          this.#evict();
        }
        return grammar;
      },
      (err: unknown) => {
        if (this.#cache.get(key) === entry) this.#cache.delete(key);
        throw err;
      },
    );
    (entry as { grammar: Promise<unknown> }).grammar = grammar;
    this.#cache.set(key, entry);
    this.#evict();
    return grammar;
  }

  async #parse(gbnf: string, param: string): Promise<{ grammar: unknown; bytes: number }> {
    const bytes = Buffer.byteLength(gbnf, 'utf8');
    if (bytes > MAX_GRAMMAR_BYTES) throw grammarTooLarge(bytes, param);
    try {
      return { grammar: await this.parse(gbnf), bytes };
    } catch (err) {
      throw unsupported((err as Error).message, param);
    }
  }

  #evict(): void {
    while (this.#cache.size > GRAMMAR_CACHE_MAX_ENTRIES || this.#bytes > GRAMMAR_CACHE_MAX_BYTES) {
      const [oldest, entry] = this.#cache.entries().next().value as [string, CacheEntry];
      this.#cache.delete(oldest);
      this.#bytes -= entry.bytes;
    }
  }
}
