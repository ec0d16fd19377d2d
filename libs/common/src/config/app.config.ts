import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export type GpuChoice = 'auto' | 'cuda' | 'vulkan' | 'metal' | 'cpu';

/** One documented environment variable: how it parses and what it defaults to. */
interface VarSpec<T> {
  readonly doc: string;
  readonly defaultText: string;
  parse(raw: string | undefined): T;
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

function int(name: string, min: number, max: number, fallback: number | undefined, doc: string): VarSpec<number | undefined> {
  return {
    doc,
    defaultText: fallback === undefined ? 'auto' : String(fallback),
    parse(raw) {
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

function list(doc: string): VarSpec<string[]> {
  return {
    doc,
    defaultText: '(empty)',
    parse: (raw) => (raw ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0),
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

function redisUrl(name: string, doc: string): VarSpec<string> {
  return {
    doc,
    defaultText: '(empty)',
    parse(raw) {
      const v = (raw ?? '').trim();
      if (v === '') return '';
      let url: URL | null = null;
      try {
        url = new URL(v);
      } catch {
        /* reported below */
      }
      if (!url || !['redis:', 'rediss:'].includes(url.protocol)) {
        throw new ConfigError(name, 'must be a redis:// or rediss:// URL', raw);
      }
      return v;
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

/**
 * Every environment variable the server reads. A unit test checks that the README's configuration
 * table lists each of them with this default, so documentation and parsing cannot drift apart.
 */
export const CONFIG_SPEC = {
  MODEL_PATH: str(BUNDLED_MODEL, 'GGUF model file to serve', 'models/stories260K.gguf (bundled)'),
  MODEL_NAME: str('', 'Model id reported by the API; defaults to the file name without .gguf', 'file name'),
  PORT: int('PORT', 1, 65535, 8000, 'HTTP port'),
  HOST: str('0.0.0.0', 'Interface to bind'),
  GPU: oneOf('GPU', ['auto', 'cuda', 'vulkan', 'metal', 'cpu'] as const, 'auto',
    'Compute backend; a GPU backend is probed in a child process first and falls back to CPU'),
  GPU_LAYERS: int('GPU_LAYERS', 0, 100000, undefined, 'Layers to offload to the GPU; auto = as many as fit'),
  THREADS: int('THREADS', 1, 1024, undefined, 'CPU threads for llama.cpp; auto = cores - 1 (leaves the event loop a core)'),
  CONTEXT_SIZE: int('CONTEXT_SIZE', 64, 1048576, undefined,
    'KV-cache tokens per slot (prompt + completion); auto = the model\'s training context, at most 4096'),
  PARALLEL_SLOTS: int('PARALLEL_SLOTS', 1, 256, 4, 'Concurrent generations (sequences of the shared context)'),
  BATCH_SIZE: int('BATCH_SIZE', 16, 65536, 512, 'Tokens per llama.cpp decode batch (prefill chunk)'),
  QUEUE_MAX: int('QUEUE_MAX', 0, 100000, 64, 'Requests that may wait for a slot; beyond it: 429'),
  QUEUE_TIMEOUT_MS: int('QUEUE_TIMEOUT_MS', 1, 3600000, 30000, 'Longest wait for a slot before 503'),
  API_KEYS: list('Comma-separated static API keys; when empty a dev key is generated in DATA_DIR/dev-api-key'),
  AUTH_DISABLED: bool('AUTH_DISABLED', false, 'Serve generation routes without an API key (trusted networks only)'),
  DATA_DIR: str('./data', 'Writable folder for local state (dev key, SQLite key store)'),
  BODY_LIMIT: bytes('BODY_LIMIT', '1mb', 'Largest accepted request body (413 above)'),
  LOG_LEVEL: oneOf('LOG_LEVEL', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info', 'Log level'),
  REDIS_URL: redisUrl('REDIS_URL', 'Redis shared by replicas (response caches); empty = in-process state only'),
  CACHE_ENABLED: bool('CACHE_ENABLED', true, 'Exact response cache (see Caches)'),
  CACHE_TTL_SECONDS: int('CACHE_TTL_SECONDS', 1, 31536000, 3600, 'Lifetime of a cached response (exact and semantic)'),
  CACHE_MAX_ENTRIES: int('CACHE_MAX_ENTRIES', 1, 10000000, 10000,
    'Bound of the in-memory exact cache (LRU); with REDIS_URL, Redis\'s maxmemory policy bounds it'),
  CACHE_SAMPLED: bool('CACHE_SAMPLED', false,
    'Also cache sampled requests (temperature > 0 without a seed); per request: X-Cache-Sampled'),
  CACHE_NAMESPACE: namespace('CACHE_NAMESPACE', 'llm-cache', 'Prefix of every cache key in Redis'),
  CACHE_TIMEOUT_MS: int('CACHE_TIMEOUT_MS', 1, 60000, 250,
    'Longest wait for one cache read or write; beyond it the request goes to the model'),
  SEMANTIC_CACHE_ENABLED: bool('SEMANTIC_CACHE_ENABLED', false, 'Semantic cache: answer near-identical prompts from the cache'),
  SEMANTIC_CACHE_THRESHOLD: fraction('SEMANTIC_CACHE_THRESHOLD', 0.95, 'Cosine similarity at or above which a cached answer is reused'),
  SEMANTIC_CACHE_MAX_ENTRIES: int('SEMANTIC_CACHE_MAX_ENTRIES', 1, 1000000, 1000, 'Bound of the semantic cache (LRU)'),
  EMBEDDING_MODEL_PATH: str('', 'GGUF model that embeds prompts for the semantic cache', 'MODEL_PATH'),
} as const;

type Spec = typeof CONFIG_SPEC;
export type EnvName = keyof Spec;
type Parsed = { [K in EnvName]: ReturnType<Spec[K]['parse']> };

/** Typed, validated configuration. Build it with `AppConfig.fromEnv`; it never changes afterwards. */
export class AppConfig {
  readonly modelPath: string;
  readonly modelName: string;
  readonly port: number;
  readonly host: string;
  readonly gpu: GpuChoice;
  readonly gpuLayers: number | undefined;
  readonly threads: number;
  readonly contextSize: number | undefined;
  readonly parallelSlots: number;
  readonly batchSize: number;
  readonly queueMax: number;
  readonly queueTimeoutMs: number;
  readonly apiKeys: readonly string[];
  readonly authDisabled: boolean;
  readonly dataDir: string;
  readonly bodyLimit: number;
  readonly logLevel: string;
  /** Empty when unset: every cache stays in the process. */
  readonly redisUrl: string;
  readonly cacheEnabled: boolean;
  readonly cacheTtlSeconds: number;
  readonly cacheMaxEntries: number;
  readonly cacheSampled: boolean;
  readonly cacheNamespace: string;
  readonly cacheTimeoutMs: number;
  readonly semanticCacheEnabled: boolean;
  readonly semanticCacheThreshold: number;
  readonly semanticCacheMaxEntries: number;
  /** Resolved path; MODEL_PATH when EMBEDDING_MODEL_PATH is unset. */
  readonly embeddingModelPath: string;

  private constructor(p: Parsed) {
    this.modelPath = resolve(p.MODEL_PATH);
    this.modelName = p.MODEL_NAME || (this.modelPath.split('/').pop() ?? 'model').replace(/\.gguf$/i, '');
    this.port = p.PORT as number;
    this.host = p.HOST;
    this.gpu = p.GPU;
    this.gpuLayers = p.GPU_LAYERS;
    this.threads = p.THREADS ?? Math.max(1, availableParallelism() - 1);
    this.contextSize = p.CONTEXT_SIZE;
    this.parallelSlots = p.PARALLEL_SLOTS as number;
    this.batchSize = p.BATCH_SIZE as number;
    this.queueMax = p.QUEUE_MAX as number;
    this.queueTimeoutMs = p.QUEUE_TIMEOUT_MS as number;
    this.apiKeys = p.API_KEYS;
    this.authDisabled = p.AUTH_DISABLED;
    this.dataDir = resolve(p.DATA_DIR);
    this.bodyLimit = p.BODY_LIMIT;
    this.logLevel = p.LOG_LEVEL;
    this.redisUrl = p.REDIS_URL;
    this.cacheEnabled = p.CACHE_ENABLED;
    this.cacheTtlSeconds = p.CACHE_TTL_SECONDS as number;
    this.cacheMaxEntries = p.CACHE_MAX_ENTRIES as number;
    this.cacheSampled = p.CACHE_SAMPLED;
    this.cacheNamespace = p.CACHE_NAMESPACE;
    this.cacheTimeoutMs = p.CACHE_TIMEOUT_MS as number;
    this.semanticCacheEnabled = p.SEMANTIC_CACHE_ENABLED;
    this.semanticCacheThreshold = p.SEMANTIC_CACHE_THRESHOLD;
    this.semanticCacheMaxEntries = p.SEMANTIC_CACHE_MAX_ENTRIES as number;
    this.embeddingModelPath = p.EMBEDDING_MODEL_PATH ? resolve(p.EMBEDDING_MODEL_PATH) : this.modelPath;
  }

  /** Parses and validates; throws ConfigError naming the first bad variable. */
  static fromEnv(env: Record<string, string | undefined> = process.env): AppConfig {
    const parsed = {} as Record<string, unknown>;
    for (const [name, spec] of Object.entries(CONFIG_SPEC)) parsed[name] = spec.parse(env[name]);
    return new AppConfig(parsed as Parsed);
  }

  /** Same as fromEnv with some variables replaced: the way tests build a config. */
  static with(overrides: Partial<Record<EnvName, string>>, env: Record<string, string | undefined> = process.env): AppConfig {
    return AppConfig.fromEnv({ ...env, ...overrides });
  }
}
