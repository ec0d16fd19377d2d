import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';

export type GpuChoice = 'auto' | 'cuda' | 'vulkan' | 'metal' | 'cpu';

/** What a dependency outage does to requests: serve them (degraded) or refuse them (503). */
export type FailMode = 'open' | 'closed';

/** One documented environment variable: how it parses and what it defaults to. */
export interface VarSpec<T> {
  readonly doc: string;
  readonly defaultText: string;
  parse(raw: string | undefined): T;
}

/** A variable of the table, with the section (documentation heading, config slice) it belongs to. */
export type SectionedSpec<T, S extends string> = VarSpec<T> & { readonly section: S; readonly sectionTitle: string };

/**
 * Tags each variable of one section with its name; the sections spread into CONFIG_SPEC, so the
 * table stays one flat object while docs/CONFIGURATION.md and `AppConfig.slice` know the groups.
 */
function section<S extends string, E extends Record<string, VarSpec<unknown>>>(
  name: S,
  title: string,
  entries: E,
): { readonly [K in keyof E]: E[K] & { readonly section: S; readonly sectionTitle: string } } {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(entries)) out[key] = { ...spec, section: name, sectionTitle: title };
  return out as { readonly [K in keyof E]: E[K] & { readonly section: S; readonly sectionTitle: string } };
}

/** Thrown for a bad variable; main.ts prints `message` as one line and exits non-zero. */
export class ConfigError extends Error {
  constructor(readonly variable: string, problem: string, raw: string | undefined) {
    super(`Invalid configuration: ${variable} ${problem} (got ${JSON.stringify(raw)})`);
    this.name = 'ConfigError';
  }
}

/** The repository root: the nearest folder above this file holding package.json (src or dist). */
export function projectRoot(): string {
  let dir = __dirname;
  while (!existsSync(resolve(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

/** The bundled model that a fresh clone serves. */
export const BUNDLED_MODEL = resolve(projectRoot(), 'models', 'stories260K.gguf');

/** An integer in [min, max]; `fallback` undefined = unset stays undefined ("auto"), else the type is a plain number. */
function int<F extends number | undefined>(name: string, min: number, max: number, fallback: F, doc: string): VarSpec<number | F> {
  return {
    doc,
    defaultText: fallback === undefined ? 'auto' : String(fallback),
    parse(raw): number | F {
      if (raw === undefined || raw.trim() === '') return fallback;
      if (!/^\d+$/.test(raw.trim())) throw new ConfigError(name, `must be an integer between ${min} and ${max}`, raw);
      const n = Number(raw.trim());
      if (n < min || n > max) throw new ConfigError(name, `must be an integer between ${min} and ${max}`, raw);
      return n;
    },
  };
}

function str(fallback: string, doc: string, defaultText = fallback): VarSpec<string> {
  return { doc, defaultText, parse: (raw) => (raw === undefined || raw.trim() === '' ? fallback : raw.trim()) };
}

function optionalStr(doc: string, defaultText = '(unset)'): VarSpec<string | undefined> {
  return { doc, defaultText, parse: (raw) => (raw === undefined || raw.trim() === '' ? undefined : raw.trim()) };
}

/** A file or folder, resolved against the working directory. */
function path(fallback: string, doc: string, defaultText = fallback): VarSpec<string> {
  return { doc, defaultText, parse: (raw) => resolve(raw === undefined || raw.trim() === '' ? fallback : raw.trim()) };
}

function optionalPath(doc: string, defaultText = '(unset)'): VarSpec<string | undefined> {
  return { doc, defaultText, parse: (raw) => (raw === undefined || raw.trim() === '' ? undefined : resolve(raw.trim())) };
}

function oneOf<T extends string>(name: string, values: readonly T[], fallback: T, doc: string): VarSpec<T> {
  return {
    doc,
    defaultText: fallback,
    parse(raw) {
      if (raw === undefined || raw.trim() === '') return fallback;
      const v = raw.trim().toLowerCase() as T;
      if (!values.includes(v)) throw new ConfigError(name, `must be one of ${values.join(' | ')}`, raw);
      return v;
    },
  };
}

function bool(name: string, fallback: boolean, doc: string): VarSpec<boolean> {
  return {
    doc,
    defaultText: String(fallback),
    parse(raw) {
      if (raw === undefined || raw.trim() === '') return fallback;
      const v = raw.trim().toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(v)) return true;
      if (['0', 'false', 'no', 'off'].includes(v)) return false;
      throw new ConfigError(name, 'must be true or false', raw);
    },
  };
}

function url(name: string, doc: string, schemes: readonly string[]): VarSpec<string | undefined> {
  return {
    doc,
    defaultText: '(unset)',
    parse(raw) {
      if (raw === undefined || raw.trim() === '') return undefined;
      // The value may carry a password: the error shows it with the credentials masked.
      const problem = `must be a URL (${schemes.map((s) => `${s}//…`).join(', ')})`;
      const shown = raw.replace(/\/\/[^@/]*@/, '//***@');
      let parsed: URL;
      try {
        parsed = new URL(raw.trim());
      } catch {
        throw new ConfigError(name, problem, shown);
      }
      if (!schemes.includes(parsed.protocol)) throw new ConfigError(name, problem, shown);
      return raw.trim();
    },
  };
}

/** A comma list: items trimmed, empty items dropped. */
function splitList(raw: string | undefined): string[] {
  return (raw ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

function list(doc: string): VarSpec<string[]> {
  return {
    doc,
    defaultText: '(empty)',
    parse: splitList,
  };
}

function pattern(name: string, re: RegExp, fallback: string, doc: string, what: string, defaultText = fallback): VarSpec<string> {
  return {
    doc,
    defaultText,
    parse(raw) {
      if (raw === undefined || raw.trim() === '') return fallback;
      if (!re.test(raw.trim())) throw new ConfigError(name, `must be ${what}`, raw);
      return raw.trim();
    },
  };
}

/** Like pattern(), but unset stays unset (undefined). */
function optionalPattern(name: string, re: RegExp, doc: string, what: string): VarSpec<string | undefined> {
  return {
    doc,
    defaultText: '(unset)',
    parse(raw) {
      if (raw === undefined || raw.trim() === '') return undefined;
      if (!re.test(raw.trim())) throw new ConfigError(name, `must be ${what}`, raw);
      return raw.trim();
    },
  };
}

/** Key scopes, as libs/auth defines them (config cannot import auth: the dependency points the other way). */
export const KEY_SCOPES = ['generate', 'retrieval', 'admin'] as const;

function scopes(name: string, fallback: string, doc: string): VarSpec<string[]> {
  return {
    doc,
    defaultText: fallback,
    parse(raw) {
      const items = splitList(raw === undefined || raw.trim() === '' ? fallback : raw).map((s) => s.toLowerCase());
      if (items.some((s) => !(KEY_SCOPES as readonly string[]).includes(s))) {
        throw new ConfigError(name, `must be a comma list of ${KEY_SCOPES.join(', ')}`, raw);
      }
      return [...new Set(items)];
    },
  };
}

/** Names `trust proxy` understands besides addresses and CIDR ranges. */
const PROXY_PRESETS = ['loopback', 'linklocal', 'uniquelocal'];

/** Addresses, CIDR ranges or Express presets; validated here so a typo stops the start. */
function proxies(name: string, doc: string): VarSpec<string[]> {
  return {
    doc,
    defaultText: '(empty)',
    parse(raw) {
      const items = splitList(raw);
      for (const item of items) {
        const [addr, bits, extra] = item.split('/');
        const family = isIP(addr);
        const max = family === 6 ? 128 : 32;
        const validBits = bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= max);
        if (PROXY_PRESETS.includes(item.toLowerCase())) continue;
        if (family === 0 || !validBits || extra !== undefined) {
          throw new ConfigError(name, `must be a comma list of IP addresses, CIDR ranges or ${PROXY_PRESETS.join('/')}`, raw);
        }
      }
      return items.map((i) => (PROXY_PRESETS.includes(i.toLowerCase()) ? i.toLowerCase() : i));
    },
  };
}

const BYTE_UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2 };
function bytes(name: string, fallback: string, doc: string): VarSpec<number> {
  const parse = (raw: string | undefined): number => {
    const text = (raw === undefined || raw.trim() === '' ? fallback : raw).trim().toLowerCase();
    const m = /^(\d+)\s*(b|kb|mb)?$/.exec(text);
    const n = m ? Number(m[1]) * BYTE_UNITS[m[2] ?? 'b'] : NaN;
    if (!Number.isFinite(n) || n < 1024 || n > 64 * 1024 ** 2) {
      throw new ConfigError(name, 'must be a size between 1kb and 64mb such as 1mb or 512kb', raw);
    }
    return n;
  };
  return { doc, defaultText: fallback, parse };
}

function fraction(name: string, fallback: number, doc: string): VarSpec<number> {
  return {
    doc,
    defaultText: String(fallback),
    parse(raw) {
      if (raw === undefined || raw.trim() === '') return fallback;
      const n = /^\d*\.?\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
      if (!(n > 0 && n <= 1)) throw new ConfigError(name, 'must be a number greater than 0 and at most 1', raw);
      return n;
    },
  };
}

function namespace(name: string, fallback: string, doc: string): VarSpec<string> {
  return {
    doc,
    defaultText: fallback,
    parse(raw) {
      const v = raw === undefined || raw.trim() === '' ? fallback : raw.trim();
      // Used in Redis SCAN patterns: glob characters would widen a flush beyond the namespace.
      if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(v)) throw new ConfigError(name, 'must be 1-64 characters of A-Z a-z 0-9 _ . : -', raw);
      return v;
    },
  };
}


const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1024, k: 1024, mb: 1024 ** 2, m: 1024 ** 2, gb: 1024 ** 3, g: 1024 ** 3, tb: 1024 ** 4, t: 1024 ** 4 };

/** A size such as `512mb`, `8gb`, `1.5tb` (binary units: 1gb = 1024^3 bytes); NaN when it is not one. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb?|mb?|gb?|tb?)?$/i.exec(text.trim());
  return m ? Math.round(Number(m[1]) * SIZE_UNITS[(m[2] ?? 'b').toLowerCase()]) : NaN;
}

/** RAM and VRAM the loaded models may take; null = no limit on that memory, `auto` = a share of what the machine has. */
export type MemoryBudget = { readonly ram: number | null | 'auto'; readonly vram: number | null | 'auto' };

/**
 * MODEL_MEMORY_BUDGET: `auto`, `unlimited`, one size (RAM; VRAM auto), or `ram=<size>,vram=<size>`
 * where each side may also be `auto` or `unlimited`.
 */
function memoryBudget(name: string, doc: string): VarSpec<MemoryBudget> {
  const side = (text: string, raw: string): number | null | 'auto' => {
    const t = text.trim().toLowerCase();
    if (t === 'auto') return 'auto';
    if (t === 'unlimited' || t === 'none') return null;
    const n = parseSize(t);
    if (!(n >= 1024 * 1024)) throw new ConfigError(name, 'sizes must be at least 1mb (e.g. 8gb, 512mb)', raw);
    return n;
  };
  return {
    doc,
    defaultText: 'auto',
    parse(raw) {
      const text = raw === undefined || raw.trim() === '' ? 'auto' : raw.trim();
      const problem = 'must be auto, unlimited, a size (8gb) or ram=<size>,vram=<size>';
      if (!text.includes('=')) {
        if (!/^(auto|unlimited|none|[\d.]+\s*[a-z]*)$/i.test(text)) throw new ConfigError(name, problem, raw);
        return { ram: side(text, text), vram: 'auto' };
      }
      const out: { ram: number | null | 'auto'; vram: number | null | 'auto' } = { ram: 'auto', vram: 'auto' };
      for (const part of text.split(',')) {
        const [k, v, extra] = part.split('=').map((x) => x.trim().toLowerCase());
        if ((k !== 'ram' && k !== 'vram') || v === undefined || v === '' || extra !== undefined) throw new ConfigError(name, problem, raw);
        out[k] = side(v, text);
      }
      return out;
    },
  };
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A keep-alive: `30s`, `5m`, `2h`, `0` (unload when idle) or `forever` (-1). NaN when it is not one. */
export function parseKeepAlive(text: string): number {
  const t = text.trim().toLowerCase();
  if (t === 'forever' || t === 'never' || t === '-1') return -1;
  if (t === '0') return 0;
  const m = /^(\d+)\s*(ms|s|m|h|d)$/.exec(t);
  return m ? Number(m[1]) * DURATION_UNITS[m[2]] : NaN;
}

function keepAlive(name: string, fallback: string, doc: string): VarSpec<number> {
  return {
    doc,
    defaultText: fallback,
    parse(raw) {
      const v = parseKeepAlive(raw === undefined || raw.trim() === '' ? fallback : raw);
      if (Number.isNaN(v)) throw new ConfigError(name, 'must be a duration (30s, 5m, 2h), 0 (unload when idle) or forever', raw);
      return v;
    },
  };
}

/** KV-cache element types users pick (llama.cpp's -ctk / -ctv values that node-llama-cpp accepts). */
export const KV_CACHE_TYPES = ['f16', 'q8_0', 'q4_0'] as const;
export type KvCacheType = (typeof KV_CACHE_TYPES)[number];
export type FlashAttention = 'auto' | 'on' | 'off';

/** Flags of every input-guard pattern: case-insensitive, Unicode. */
export const INPUT_GUARD_FLAGS = 'iu';

/**
 * A JSON array of regular expressions (JSON, not a comma list: patterns contain commas). Each is
 * compiled here, so a typo stops the start instead of failing open at the first request.
 */
function regexList(name: string, doc: string): VarSpec<RegExp[]> {
  return {
    doc,
    defaultText: '(empty)',
    parse(raw) {
      if (raw === undefined || raw.trim() === '') return [];
      let items: unknown;
      try {
        items = JSON.parse(raw);
      } catch {
        items = undefined;
      }
      if (!Array.isArray(items) || !items.every((i) => typeof i === 'string' && i.length > 0)) {
        throw new ConfigError(name, 'must be a JSON array of regular expressions such as ["ignore (all )?previous instructions"]', raw);
      }
      return items.map((source: string) => {
        try {
          return new RegExp(source, INPUT_GUARD_FLAGS);
        } catch (err) {
          throw new ConfigError(name, `holds an invalid regular expression ${JSON.stringify(source)}: ${(err as Error).message}`, raw);
        }
      });
    },
  };
}

/** `*` or a comma list of exact origins (scheme://host[:port]); validated so a typo stops the start. */
function origins(name: string, doc: string): VarSpec<string[]> {
  return {
    doc,
    defaultText: '(empty)',
    parse(raw) {
      const items = splitList(raw);
      for (const item of items) {
        if (item === '*') continue;
        let ok = false;
        try {
          const u = new URL(item);
          ok = (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === item.replace(/\/$/, '');
        } catch {
          ok = false;
        }
        if (!ok) throw new ConfigError(name, 'must be * or a comma list of origins such as https://app.example.com', raw);
      }
      return items.map((i) => i.replace(/\/$/, ''));
    },
  };
}

/**
 * Every environment variable the server reads. docs/CONFIGURATION.md is generated from this table
 * (`npm run docs:config`), and a unit test checks that it is current, so documentation and parsing cannot drift apart.
 */
export const CONFIG_SPEC = {
  ...section('model', 'Models', {
    MODEL_PATH: path(BUNDLED_MODEL, 'GGUF model file to serve; with `MODELS_DIR` / `MODELS_FILE` it is one model of the registry (the bundled one is then served only if `MODEL_PATH` is set)', 'models/stories260K.gguf (bundled)'),
    MODEL_NAME: str('', 'Model id reported by the API; defaults to the file name without .gguf', 'file name'),
    MODELS_DIR: optionalPath( 'Folder of GGUF models: every `*.gguf` in it is a model (id = file name without `.gguf`; kind read from the file); `model pull` saves there (see [Several models](MODELS.md))', '(unset)'),
    MODELS_FILE: optionalPath( 'Models file (YAML or JSON): ids, paths, aliases, kinds and per-model settings (see [Several models](MODELS.md))', '(unset)'),
    DEFAULT_MODEL: optionalStr( 'Model (id or alias) of requests that name none; loaded at start, never unloaded automatically; readiness follows it',
      'MODEL_PATH\'s model, else the first chat model'),
    MODEL_MEMORY_BUDGET: memoryBudget('MODEL_MEMORY_BUDGET',
      'RAM and VRAM the loaded models may take, by node-llama-cpp\'s estimate before loading: `auto` (80% of RAM, 90% of VRAM), `unlimited`, a size (`8gb`: RAM) or `ram=<size>,vram=<size>`; the least recently used idle model is unloaded to make room'),
    MODEL_KEEP_ALIVE: keepAlive('MODEL_KEEP_ALIVE', '5m', 'How long a model other than the default stays loaded after its last request (`30s`, `5m`, `2h`, `0` = unload when idle, `forever`); per model: `keep_alive`'),
    MODEL_LOAD_TIMEOUT_MS: int('MODEL_LOAD_TIMEOUT_MS', 1000, 3600000, 120000,
      'Longest a request waits for its model to load (and for room in the memory budget) before a 503'),
    FLASH_ATTENTION: oneOf('FLASH_ATTENTION', ['auto', 'on', 'off'] as const, 'auto', 'Flash attention for every model: `auto` (when the model and backend support it), `on`, `off`; per model: `flash_attention`'),
    KV_CACHE_TYPE_K: oneOf('KV_CACHE_TYPE_K', KV_CACHE_TYPES, 'f16', 'KV-cache key type for every model: `f16`, `q8_0`, `q4_0`; per model: `kv_cache_type_k` (measurements: [docs/PERFORMANCE.md](PERFORMANCE.md))'),
    KV_CACHE_TYPE_V: oneOf('KV_CACHE_TYPE_V', KV_CACHE_TYPES, 'f16', 'KV-cache value type: `f16`, `q8_0`, `q4_0` (quantized needs flash attention); per model: `kv_cache_type_v`'),
    EMBEDDING_MODEL_PATH: optionalPath( 'GGUF embedding model: an entry of kind `embedding` in the registry, used by `/v1/embeddings` when a request names no model, by the semantic cache and by retrieval (loaded on first use); unset = the models file\'s first embedding model, else the default model', 'MODEL_PATH'),
    RERANK_MODEL_PATH: optionalPath( 'Reranking GGUF (a cross-encoder with a classifier head: bge-reranker, jina-reranker, Qwen3-Reranker…) for `POST /v1/rerank` and `retrieval.rerank`, loaded on the CPU once the served model is ready; unset = no reranker (404 `rerank_not_configured`)', '(unset)'),
  }),
  ...section('server', 'HTTP server', {
    PORT: int('PORT', 1, 65535, 8000, 'HTTP port'),
    HOST: str('0.0.0.0', 'Interface to bind'),
    ENV_FILE: optionalStr( 'A file of `NAME=value` lines read at start by the server and the CLI (also `--env-file <path>`); variables already in the environment win over it. Unset: `.env` in the working directory, if there is one', '.env (if present)'),
    TRUSTED_PROXIES: proxies('TRUSTED_PROXIES', 'Proxies whose `X-Forwarded-For` is believed (IPs, CIDRs, `loopback`, `linklocal`, `uniquelocal`); empty = the TCP peer is the client'),
    HEALTH_PUBLIC: bool('HEALTH_PUBLIC', true, '`/health*` answers without a key (false: any valid key)'),
    METRICS_PUBLIC: bool('METRICS_PUBLIC', true, '`/metrics` answers without a key (false: a key with the `admin` scope)'),
    DOCS_ENABLED: bool('DOCS_ENABLED', true, 'Serve the OpenAPI document at `/openapi.json` and its browsable page at `/docs` (public, like `/health`); false = 404'),
    CONSOLE_ENABLED: bool('CONSOLE_ENABLED', true, 'Serve the operator web console at `/console` (sign-in with an `admin` key); false = 404'),
    CORS_ORIGINS: origins('CORS_ORIGINS', 'Browser origins allowed to call the API (CORS): a comma list of origins (`https://app.example.com`) or `*`; empty = no CORS headers, so pages on other origins cannot read answers'),
    BODY_LIMIT: bytes('BODY_LIMIT', '1mb', 'Largest accepted request body (413 above)'),
    BODY_TIMEOUT_MS: int('BODY_TIMEOUT_MS', 100, 600000, 30000, 'Longest time a client may take to send a request body once its headers arrived (408 `request_timeout` beyond, connection closed)'),
    DRAIN_TIMEOUT_MS: int('DRAIN_TIMEOUT_MS', 0, 3600000, 25000,
      'On SIGTERM: how long running generations may finish (readiness answers 503 `draining`) before shutdown goes on'),
    INSTANCE_ID: optionalPattern('INSTANCE_ID', /^[\w.:-]{1,128}$/,
      'Name of this replica, sent in the `X-Replica` response header (which replica behind a load balancer answered); letters, digits, `_ . : -`. Unset: no `X-Replica` header (the host name is never sent)',
      'up to 128 letters, digits or _ . : -'),
  }),
  ...section('engine', 'Engine and scheduler', {
    GPU: oneOf('GPU', ['auto', 'cuda', 'vulkan', 'metal', 'cpu'] as const, 'auto',
      'Compute backend (`auto`, `cuda`, `vulkan`, `metal`, `cpu`); a GPU backend is probed in a child process first and falls back to CPU'),
    GPU_LAYERS: int('GPU_LAYERS', 0, 100000, undefined, 'Layers to offload to the GPU; auto = as many as fit'),
    THREADS: int('THREADS', 1, 1024, undefined,
      'CPU threads for llama.cpp; auto = every core when the engine addon runs (persistent threadpool), else cores - 1'),
    THREAD_POLL: int('THREAD_POLL', 0, 100, 50,
      'How hard the engine addon\'s threads busy-wait between decode calls (ggml poll level): 0 = sleep at once, 100 = spin longest'),
    ENGINE_ADDON: oneOf('ENGINE_ADDON', ['auto', 'off'] as const, 'auto',
      'Engine addon (persistent ggml threadpool, timed decode, built by `npm ci`): `auto` = use it when built and compatible, `off` = node-llama-cpp\'s binding only'),
    ENGINE_LOOP: oneOf('ENGINE_LOOP', ['native', 'js'] as const, 'native',
      'With the engine addon: `native` = decode steps run back to back on the addon\'s thread, tokens handed to JavaScript while the next step computes; `js` = one addon call per step from the scheduler (the path before; for comparison)'),
    ENGINE_GAP_FILL: int('ENGINE_GAP_FILL', 0, 64, 1,
      'With the engine addon: a decode step fills a hole of up to this many idle slots between busy ones with a throwaway token each, removed after the step (llama.cpp splits a step at every hole in the sequence ids: one more pass over the weights); 0 = never'),
    ENGINE_PROMPT_ALONE: oneOf('ENGINE_PROMPT_ALONE', ['auto', 'on', 'off'] as const, 'auto',
      'With the native loop: a step that takes a new prompt in leaves the generating slots to the next step, so the prompt\'s first token comes one decode pass sooner (llama.cpp evaluates a step of decode tokens and a prompt as two passes anyway); `auto` = on when the model runs on the CPU, off on a GPU'),
    ENGINE_DECODE_SPLIT: oneOf('ENGINE_DECODE_SPLIT', ['auto', 'on', 'off'] as const, 'auto',
      'With the engine addon: small decode steps (2 streams; 2-4 on one thread) may run as one decode call per token where that measures faster (ggml\'s one-token kernels can beat its batched ones for a few tokens on a CPU); the thread policy measures both; `auto` = when the model runs on the CPU, `on` = on any backend, `off` = never'),
    ENGINE_DECODE_PAD: oneOf('ENGINE_DECODE_PAD', ['auto', 'on', 'off'] as const, 'auto',
      'With the engine addon and 8 slots or more: decode steps of 5-7 streams may be padded to 8 tokens with throwaway ones (removed after the step) where that measures faster (ggml\'s CPU kernels can take 8 columns in less time than 5-7); the thread policy measures both; `auto` = when the model runs on the CPU, `on` = on any backend, `off` = never'),
    ENGINE_ADDON_PATH: optionalPath( 'Where the engine addon is loaded from', 'libs/inference/native/build/Release/llm_engine.node'),
    CONTEXT_SIZE: int('CONTEXT_SIZE', 64, 1048576, undefined,
      'KV-cache tokens per slot (prompt + completion); auto = the model\'s training context, at most 4096; per model: `context_size`'),
    PARALLEL_SLOTS: int('PARALLEL_SLOTS', 1, 256, 4, 'Concurrent generations per chat model (sequences of its context); per model: `slots`'),
    BATCH_SIZE: int('BATCH_SIZE', 16, 65536, 512, 'Tokens per llama.cpp decode batch (prefill chunk)'),
    PREFILL_CHUNK: int('PREFILL_CHUNK', 1, 65536, 128,
      'Prompt tokens evaluated per step while other requests stream (bounds their pause; a lone prompt uses the whole batch)'),
    PROMPT_PACK_TOKENS: int('PROMPT_PACK_TOKENS', 1, 65536, undefined,
      'Prompt tokens of different requests evaluated in one step: the oldest waiting prompt always goes, others join only within this; auto = 16 on a CPU (prefill is compute-bound: every prompt added to a step delays the first token of the others) and, while three or more prompts wait, what ~40 ms of prompt work holds as measured at load; the batch size when the model runs on a GPU'),
    PROMPT_DRAIN_PACK: bool('PROMPT_DRAIN_PACK', true,
      'While two or more prompts wait and every generating request ends within as many tokens as prompts wait (its max_tokens), one step takes all the waiting prompts the batch holds instead of those within PROMPT_PACK_TOKENS: taken one a step, short answers made most decode passes a few tokens wide; packed, the next passes decode them all at once (measured +20% throughput with 4-token answers at eight clients on 2 cores, docs/PERFORMANCE.md)'),
    QUEUE_MAX: int('QUEUE_MAX', 0, 100000, 64, 'Requests that may wait for a slot; beyond it: 429'),
    QUEUE_TIMEOUT_MS: int('QUEUE_TIMEOUT_MS', 1, 3600000, 30000, 'Longest wait for a slot before 503'),
  }),
  ...section('auth', 'API keys', {
    API_KEYS: list('Comma-separated static API keys (hashed at start; scopes generate, retrieval and admin, the KEY_DEFAULT_* limits), accepted alongside the key store'),
    AUTH_DISABLED: bool('AUTH_DISABLED', false,
      'Serve routes that need only the `AUTH_DISABLED_SCOPES` (default: generation and collection reads) without an API key (trusted networks only); only the per-IP limits apply. Admin routes (`/admin/*`), retrieval writes and a protected `/metrics` still need a key with the scope; see [API keys](KEYS.md#api-keys-and-rate-limits)'),
    AUTH_DISABLED_SCOPES: scopes('AUTH_DISABLED_SCOPES', 'generate',
      'With `AUTH_DISABLED=true`: the scopes of a request without a key (comma list of `generate`, `retrieval`, `admin`). The explicit second switch: add `retrieval` or `admin` only to open those routes to everyone'),
    KEY_STORE_FAIL_MODE: oneOf('KEY_STORE_FAIL_MODE', ['open', 'closed'] as const, 'closed',
      'Key store unreachable: `closed` = 503 for keys not in the fresh cache; `open` = keys this replica already verified keep working (unknown keys still 503)'),
    KEY_CACHE_TTL_MS: int('KEY_CACHE_TTL_MS', 0, 3600000, 5000, 'How long a verified key is trusted before the store is read again; a revocation takes effect within it; 0 = read every request'),
    KEY_DEFAULT_RPM: int('KEY_DEFAULT_RPM', 0, 10000000, 600, 'Requests per window for static keys, and the default of `keys create --rpm`; 0 = unlimited'),
    KEY_DEFAULT_TPM: int('KEY_DEFAULT_TPM', 0, 1000000000, 0, 'Prompt + completion tokens per window, same use; 0 = unlimited'),
    KEY_DEFAULT_CONCURRENCY: int('KEY_DEFAULT_CONCURRENCY', 0, 100000, 8, 'Requests in flight per key, same use; 0 = unlimited'),
  }),
  ...section('limits', 'Rate limits', {
    RATE_LIMIT_IP_RPM: int('RATE_LIMIT_IP_RPM', 0, 10000000, 100, 'Requests per window per client IP on each non-streaming route (the seed\'s 100/min); 0 = off'),
    RATE_LIMIT_IP_STREAM_RPM: int('RATE_LIMIT_IP_STREAM_RPM', 0, 10000000, 50, 'Streaming requests per window per client IP on each route (the seed\'s 50/min); 0 = off'),
    RATE_LIMIT_WINDOW_MS: int('RATE_LIMIT_WINDOW_MS', 1000, 86400000, 60000, 'The window the `*_RPM`/`*_TPM` limits count in'),
    RATE_LIMIT_FAIL_MODE: oneOf('RATE_LIMIT_FAIL_MODE', ['open', 'closed'] as const, 'open',
      'Redis unreachable: `open` = keep serving, counting per replica in memory; `closed` = 503 until Redis answers'),
  }),
  ...section('storage', 'Storage', {
    DATA_DIR: path('./data', 'Writable folder for local state: the SQLite key store `keys.db` (mode 0600) and the vector database `vectors/`; folders it creates are mode 0700'),
    DATABASE_URL: url('DATABASE_URL', 'PostgreSQL for the key store (`postgres://user:pass@host:5432/db`), migrated at start, checked by readiness; unset = SQLite in DATA_DIR',
      ['postgres:', 'postgresql:']),
    DATABASE_SCHEMA: pattern('DATABASE_SCHEMA', /^[a-z_][a-z0-9_]{0,62}$/, 'public',
      'PostgreSQL schema of the key tables (created by the migration)', 'a lower-case SQL identifier'),
    REDIS_URL: url('REDIS_URL', 'Redis shared by replicas (`redis://host:6379/0`): rate-limit counters and caches, checked by readiness; unset = in memory',
      ['redis:', 'rediss:']),
    REDIS_KEY_PREFIX: pattern('REDIS_KEY_PREFIX', /^[\w:.-]{1,64}$/, 'llm:', 'Prefix of every Redis key this server writes: rate-limit counters, budget counters, and the caches\' keys before `CACHE_NAMESPACE`', 'up to 64 letters, digits or _ : . -'),
    RESPONSES_RETENTION_SECONDS: int('RESPONSES_RETENTION_SECONDS', 60, 31536000, 2592000,
      'How long a stored Responses API response (`store`, the default) is kept (30 days; 60 to 31536000) for `GET /v1/responses/{id}`, `input_items` and `previous_response_id`; expired ones are invisible at once and deleted hourly'),
  }),
  ...section('requests', 'Request limits and input guard', {
    INPUT_MAX_CHARS: int('INPUT_MAX_CHARS', 0, 100000000, 0, 'Input guard: most characters of prompt text per request (the prompt, or all chat messages together); above it a 400 `input_too_long`; 0 = off'),
    INPUT_GUARD_PATTERNS: regexList('INPUT_GUARD_PATTERNS', 'Input guard: a JSON array of regular expressions (case-insensitive), e.g. `["ignore (all )?previous instructions"]`; a prompt or chat message that matches one is a 400 `input_rejected` naming the field and the rule\'s number; empty = off'),
    SCHEMA_MAX_BYTES: bytes('SCHEMA_MAX_BYTES', '64kb', 'Largest `response_format` JSON schema (400 `schema_too_complex` above)'),
    SCHEMA_MAX_ENUM_VALUES: int('SCHEMA_MAX_ENUM_VALUES', 1, 10000000, 1000, '`enum` values (and `const`s) one `response_format` schema may hold in all'),
    SCHEMA_MAX_DEPTH: int('SCHEMA_MAX_DEPTH', 1, 64, 10, 'Deepest nesting of subschemas (properties, items, anyOf…) in a `response_format` schema'),
    SCHEMA_MAX_PROPERTIES: int('SCHEMA_MAX_PROPERTIES', 1, 10000000, 1000, 'Object properties one `response_format` schema may declare in all'),
  }),
  ...section('usage', 'Usage and budgets', {
    USAGE_FLUSH_INTERVAL_MS: int('USAGE_FLUSH_INTERVAL_MS', 100, 3600000, 5000,
      'How often the usage ledger writes its buffered counts to the database (also at shutdown, after the drain); a crash loses at most this much usage'),
    USAGE_BUFFER_MAX: int('USAGE_BUFFER_MAX', 1, 10000000, 10000,
      'Most (key, model, route, hour) buckets the ledger holds while the database is unreachable; usage of new buckets beyond it is dropped and counted (`llm_usage_dropped_total`)'),
    BUDGET_FAIL_MODE: oneOf('BUDGET_FAIL_MODE', ['open', 'closed'] as const, 'open',
      'Budget counters (Redis, else the database) unreachable: `open` = serve without enforcing budgets; `closed` = 503 `budget_unavailable` for keys that have a budget'),
    BUDGET_WARN_FRACTION: fraction('BUDGET_WARN_FRACTION', 0.1,
      'Responses carry `X-Budget-Remaining-Tokens` and `X-Budget-Reset` once a key has at most this fraction of a budget left (1 = always)'),
  }),
  ...section('observability', 'Logs, metrics and traces', {
    LOG_LEVEL: oneOf('LOG_LEVEL', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info', 'Log level'),
    LOG_FORMAT: oneOf('LOG_FORMAT', ['auto', 'pretty', 'json'] as const, 'auto', '`pretty` = one coloured line per event for people; `json` = one JSON object per line for log collectors; `auto` = pretty when stdout is a terminal, else json'),
    LOG_PROMPTS: bool('LOG_PROMPTS', false, 'Include prompt text (truncated to 2,000 characters) in request log lines; off by default'),
    HEALTH_CHECK_TIMEOUT_MS: int('HEALTH_CHECK_TIMEOUT_MS', 50, 60000, 1000,
      'Longest wait for Redis/PostgreSQL to answer a readiness or metrics check before it counts as down'),
    GPU_METRICS_INTERVAL_MS: int('GPU_METRICS_INTERVAL_MS', 0, 3600000, 5000,
      'How often `nvidia-smi` is sampled for the GPU metrics; 0 turns sampling off'),
    STEP_TRACE_FILE: optionalPath(
      'Appends one JSON line per engine step to this file (time, wall / compute / host ms, threads, tokens, sequences, prompt items, throwaway tokens) for performance work; `node scripts/step-trace-summary.mjs <file>` sums it up by step shape; unset = off (see [Performance](PERFORMANCE.md))'),
    OTEL_EXPORTER_OTLP_ENDPOINT: url('OTEL_EXPORTER_OTLP_ENDPOINT',
      'OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`); when set, traces are exported to `<url>/v1/traces`', ['http:', 'https:']),
    OTEL_SERVICE_NAME: str('llm-api', '`service.name` of the exported traces'),
  }),
  ...section('cache', 'Caches', {
    CACHE_ENABLED: bool('CACHE_ENABLED', true, 'Exact response cache (see [Caches](CACHES.md))'),
    CACHE_TTL_SECONDS: int('CACHE_TTL_SECONDS', 1, 31536000, 3600, 'Lifetime of a cached response (exact and semantic)'),
    CACHE_MAX_ENTRIES: int('CACHE_MAX_ENTRIES', 1, 10000000, 10000,
      'Bound of the in-memory exact cache (LRU); with `REDIS_URL`, Redis\'s `maxmemory` policy bounds it'),
    CACHE_SAMPLED: bool('CACHE_SAMPLED', false,
      'Also cache sampled requests (temperature > 0 without a seed); per request: `X-Cache-Sampled`'),
    CACHE_NAMESPACE: namespace('CACHE_NAMESPACE', 'llm-cache', 'Namespace of the cache keys in Redis, after `REDIS_KEY_PREFIX`: keys are `<REDIS_KEY_PREFIX><CACHE_NAMESPACE>:exact::…` (default `llm:llm-cache:exact::…`); A-Z a-z 0-9 _ . : -'),
    CACHE_SCOPE: oneOf('CACHE_SCOPE', ['key', 'global'] as const, 'key',
      'Who shares cached answers, exact and semantic: `key` = each API key only its own requests\' answers; `global` = every key (more hits, but a hit tells a key that another asked the same); see [Caches](CACHES.md)'),
    CACHE_TIMEOUT_MS: int('CACHE_TIMEOUT_MS', 1, 60000, 250,
      'Longest wait for one cache read or write; beyond it the request goes to the model'),
    SEMANTIC_CACHE_ENABLED: bool('SEMANTIC_CACHE_ENABLED', false, 'Semantic cache: answer near-identical prompts from the cache'),
    SEMANTIC_CACHE_THRESHOLD: fraction('SEMANTIC_CACHE_THRESHOLD', 0.95, 'Cosine similarity at or above which a cached answer is reused'),
    SEMANTIC_CACHE_MAX_ENTRIES: int('SEMANTIC_CACHE_MAX_ENTRIES', 1, 1000000, 1000, 'Bound of the semantic cache (LRU)'),
  }),
  ...section('retrieval', 'Retrieval', {
    VECTOR_STORE_URI: str('', 'LanceDB database of the retrieval collections: a local folder, or an object-store URI (`s3://bucket/path`, `gs://…`, `az://…`, credentials from the usual cloud environment variables)', 'DATA_DIR/vectors'),
    RETRIEVAL_CHUNK_TOKENS: int('RETRIEVAL_CHUNK_TOKENS', 8, 2048, 256, 'Tokens (of the embedding model) per document chunk'),
    RETRIEVAL_CHUNK_OVERLAP: int('RETRIEVAL_CHUNK_OVERLAP', 0, 2047, 32, 'Tokens shared by consecutive chunks; must be below `RETRIEVAL_CHUNK_TOKENS`'),
    RETRIEVAL_UPLOAD_LIMIT: bytes('RETRIEVAL_UPLOAD_LIMIT', '1mb', 'Largest document upload (JSON or `text/plain` body; 413 above)'),
    RETRIEVAL_UPLOAD_CONCURRENCY: int('RETRIEVAL_UPLOAD_CONCURRENCY', 0, 1000, 1,
      'Document uploads one API key may have in progress at once (chunking and embedding); beyond it a 429 `concurrency_limit_exceeded`; 0 = unlimited'),
  }),
} as const;


type Spec = typeof CONFIG_SPEC;
export type EnvName = keyof Spec;
type Parsed = { [K in EnvName]: ReturnType<Spec[K]['parse']> };

/** `RATE_LIMIT_IP_RPM` -> `rateLimitIpRpm`: the config field of a variable. */
type CamelCase<S extends string> = S extends `${infer H}_${infer R}` ? `${Lowercase<H>}${Capitalize<CamelCase<R>>}` : Lowercase<S>;
export type ConfigField<K extends EnvName> = CamelCase<K>;

/** The runtime twin of CamelCase. */
export function configField<K extends EnvName>(name: K): ConfigField<K> {
  return name.toLowerCase().replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase()) as ConfigField<K>;
}

/** Sections of the table: documentation headings and `AppConfig.slice` names. */
export type ConfigSection = Spec[EnvName]['section'];

/** One field per variable, typed by its parser: a default makes it non-optional. */
type TableFields = { readonly [K in EnvName as CamelCase<K>]: Parsed[K] };

/** Fields computed from several variables (or from the variable and something else). */
interface DerivedFields {
  /** MODEL_NAME, else the model file's name without .gguf. */
  readonly modelName: string;
  /** True when MODEL_PATH was set (else the bundled model, served only when no MODELS_DIR / MODELS_FILE is set). */
  readonly modelPathSet: boolean;
  /** EMBEDDING_MODEL_PATH resolved; MODEL_PATH when unset. */
  readonly embeddingModelPath: string;
  /** VECTOR_STORE_URI (a folder resolved, an object-store URI as is); `DATA_DIR/vectors` when unset. */
  readonly vectorStoreUri: string;
  /** Limits given to static keys and, by the CLI, to new keys (0 = unlimited). */
  readonly keyDefaults: { readonly rpm: number; readonly tpm: number; readonly concurrency: number };
  /** Limits of a response_format JSON schema (400 `schema_too_complex` beyond). */
  readonly schemaLimits: { readonly maxBytes: number; readonly maxEnumValues: number; readonly maxDepth: number; readonly maxProperties: number };
}

type SectionFields<S extends ConfigSection> = { [K in EnvName]: Spec[K]['section'] extends S ? CamelCase<K> : never }[EnvName];

/** The fields of one section, e.g. `ConfigSlice<'cache'>`: what a library that needs only its own settings is given. */
export type ConfigSlice<S extends ConfigSection> = Pick<AppConfig, SectionFields<S>>;

/**
 * Typed, validated configuration: one readonly field per CONFIG_SPEC variable (camelCase of its
 * name, typed by its parser) plus DerivedFields. Build it with `AppConfig.fromEnv`; it never
 * changes afterwards.
 */
// The field declarations come from the table through this interface (declaration merging), so a
// variable is written once: its CONFIG_SPEC entry.
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export interface AppConfig extends Omit<TableFields, keyof DerivedFields>, DerivedFields {}

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export class AppConfig {
  private constructor(p: Parsed, modelPathSet: boolean) {
    if (p.KV_CACHE_TYPE_V !== 'f16' && p.FLASH_ATTENTION === 'off') {
      throw new ConfigError('KV_CACHE_TYPE_V', 'must be f16 when FLASH_ATTENTION=off (llama.cpp quantizes the V cache only with flash attention)', p.KV_CACHE_TYPE_V);
    }
    if (p.RETRIEVAL_CHUNK_OVERLAP >= p.RETRIEVAL_CHUNK_TOKENS) {
      throw new ConfigError('RETRIEVAL_CHUNK_OVERLAP', `must be below RETRIEVAL_CHUNK_TOKENS (${p.RETRIEVAL_CHUNK_TOKENS})`, String(p.RETRIEVAL_CHUNK_OVERLAP));
    }
    const fields: Record<string, unknown> = {};
    for (const name of Object.keys(p) as EnvName[]) fields[configField(name)] = p[name];
    const derived: DerivedFields = {
      modelName: p.MODEL_NAME || (p.MODEL_PATH.split('/').pop() ?? 'model').replace(/\.gguf$/i, ''),
      modelPathSet,
      embeddingModelPath: p.EMBEDDING_MODEL_PATH ?? p.MODEL_PATH,
      vectorStoreUri: p.VECTOR_STORE_URI
        ? /^[a-z][a-z0-9+.-]*:\/\//i.test(p.VECTOR_STORE_URI) ? p.VECTOR_STORE_URI : resolve(p.VECTOR_STORE_URI)
        : resolve(p.DATA_DIR, 'vectors'),
      keyDefaults: { rpm: p.KEY_DEFAULT_RPM, tpm: p.KEY_DEFAULT_TPM, concurrency: p.KEY_DEFAULT_CONCURRENCY },
      schemaLimits: {
        maxBytes: p.SCHEMA_MAX_BYTES,
        maxEnumValues: p.SCHEMA_MAX_ENUM_VALUES,
        maxDepth: p.SCHEMA_MAX_DEPTH,
        maxProperties: p.SCHEMA_MAX_PROPERTIES,
      },
    };
    Object.assign(this, fields, derived);
  }

  /** The settings of one section only (`config.slice('cache')`), typed: what a library is handed. */
  slice<S extends ConfigSection>(section: S): ConfigSlice<S> {
    const out: Record<string, unknown> = {};
    for (const [name, spec] of Object.entries(CONFIG_SPEC) as [EnvName, { section: string }][]) {
      if (spec.section === section) out[configField(name)] = (this as unknown as Record<string, unknown>)[configField(name)];
    }
    return out as ConfigSlice<S>;
  }

  /**
   * The URL a client on this machine (the CLI) reaches this server at: HOST and PORT, with a
   * wildcard bind address (0.0.0.0, ::) replaced by loopback.
   */
  localUrl(): string {
    const host = this.host === '0.0.0.0' || this.host === '' ? '127.0.0.1' : this.host === '::' || this.host === '[::]' ? '[::1]' : this.host;
    return `http://${isIP(host) === 6 ? `[${host}]` : host}:${this.port}`;
  }

  /** Parses and validates; throws ConfigError naming the first bad variable. */
  static fromEnv(env: Record<string, string | undefined> = process.env): AppConfig {
    const parsed = {} as Record<string, unknown>;
    for (const [name, spec] of Object.entries(CONFIG_SPEC)) parsed[name] = spec.parse(env[name]);
    return new AppConfig(parsed as Parsed, (env.MODEL_PATH ?? '').trim() !== '');
  }

  /** Same as fromEnv with some variables replaced: the way tests build a config. */
  static with(overrides: Partial<Record<EnvName, string>>, env: Record<string, string | undefined> = process.env): AppConfig {
    return AppConfig.fromEnv({ ...env, ...overrides });
  }
}
