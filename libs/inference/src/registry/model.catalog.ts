import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import type { InferenceConfig } from '../inference.config';
import { basename, dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { load as parseYaml } from 'js-yaml';
import { AppConfig, KV_CACHE_TYPES, parseKeepAlive } from '@app/common';
import type { FlashAttention, KvCacheType } from '@app/common';
import { readGgufMetadata } from '../gguf/gguf.reader';
import { MODEL_KINDS, ModelKind, ModelSource, ModelSpec, SamplingDefaults } from './model.types';

/** A bad models file or a clash between entries: the server refuses to start, naming it. */
export class ModelCatalogError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelCatalogError';
  }
}

/** Ids and aliases: what a request's `model` field may say (Ollama's `llama3:8b`, Hugging Face's `org/name` included). */
export const MODEL_NAME_PATTERN = /^[A-Za-z0-9][\w.:@/+-]{0,127}$/;

/** Keys a models-file entry may have; anything else is refused (a typo must not be ignored). */
const ENTRY_KEYS = new Set([
  'id', 'path', 'aliases', 'kind', 'context_size', 'slots', 'batch_size', 'threads', 'gpu_layers', 'flash_attention',
  'kv_cache_type', 'kv_cache_type_k', 'kv_cache_type_v', 'keep_alive', 'preload', 'defaults',
]);
const DEFAULT_KEYS: Record<keyof SamplingDefaults, [number, number, boolean]> = {
  temperature: [0, 2, false],
  top_p: [0, 1, false],
  top_k: [0, 1000, true],
  min_p: [0, 1, false],
  repeat_penalty: [0, 10, false],
  presence_penalty: [-2, 2, false],
  frequency_penalty: [-2, 2, false],
  max_tokens: [1, 1_048_576, true],
};

/** llama.cpp's pooling types (llama_pooling_type): RANK marks a reranker, MEAN/CLS/LAST an embedder. */
const POOLING_RANK = 4;
const EMBEDDING_ARCHITECTURES = new Set(['bert', 'nomic-bert', 'nomic-bert-moe', 'jina-bert-v2', 'jina-bert-v3', 'modern-bert', 'neo-bert', 't5encoder']);

/**
 * What a GGUF in MODELS_DIR is, from its metadata: a reranker (rank pooling), an embedding model
 * (an encoder architecture, or mean/CLS/last pooling), else a chat model. A file that cannot be
 * read is listed as a chat model; loading it then reports the problem.
 */
export function detectKind(path: string): ModelKind {
  try {
    const meta = readGgufMetadata(path);
    const arch = String(meta.get('general.architecture') ?? '');
    const pooling = Number(meta.get(`${arch}.pooling_type`) ?? 0);
    if (pooling === POOLING_RANK) return 'rerank';
    if (EMBEDDING_ARCHITECTURES.has(arch) || pooling > 0) return 'embedding';
  } catch {
    /* unreadable: reported when it is loaded */
  }
  return 'chat';
}

/** `name.gguf` → `name`; the first part of a split GGUF (`x-00001-of-00003.gguf`) → `x`. */
export function idFromFileName(file: string): string {
  return basename(file).replace(/\.gguf$/i, '').replace(/-0*1-of-\d+$/, '');
}

/** The GGUF files of a folder that are models: split GGUFs by their first part only, sorted by name. */
export function scanModelsDir(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /\.gguf$/i.test(f) && Number(/-(\d+)-of-\d+\.gguf$/i.exec(f)?.[1] ?? 1) === 1)
    .filter((f) => {
      try {
        return statSync(join(dir, f)).isFile();
      } catch {
        return false;
      }
    })
    .sort()
    .map((f) => join(dir, f));
}

/** The server-wide settings an entry inherits (from the environment). */
function baseSpec(config: InferenceConfig, id: string, path: string, kind: ModelKind, source: ModelSource, isDefault: boolean): ModelSpec {
  return {
    id,
    aliases: [],
    path,
    kind,
    source,
    contextSize: config.contextSize,
    slots: config.parallelSlots,
    batchSize: config.batchSize,
    threads: config.threads,
    gpuLayers: config.gpuLayers,
    flashAttention: config.flashAttention,
    kvCacheTypeK: config.kvCacheTypeK,
    kvCacheTypeV: config.kvCacheTypeV,
    keepAliveMs: isDefault ? -1 : config.modelKeepAlive,
    preload: false,
    defaults: {},
  };
}

type Raw = Record<string, unknown>;

function fail(file: string, where: string, problem: string): never {
  throw new ModelCatalogError(`${file}: ${where} ${problem}`);
}

function intField(file: string, where: string, key: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(file, where, `${key} must be an integer between ${min} and ${max} (got ${JSON.stringify(v)})`);
  return v;
}

function flashField(file: string, where: string, v: unknown): FlashAttention {
  if (v === true || v === 'on') return 'on';
  if (v === false || v === 'off') return 'off';
  if (v === 'auto') return 'auto';
  fail(file, where, `flash_attention must be auto, on or off (got ${JSON.stringify(v)})`);
}

function kvField(file: string, where: string, key: string, v: unknown): KvCacheType {
  const t = typeof v === 'string' ? v.toLowerCase() : v;
  if (!KV_CACHE_TYPES.includes(t as KvCacheType)) fail(file, where, `${key} must be one of ${KV_CACHE_TYPES.join(', ')} (got ${JSON.stringify(v)})`);
  return t as KvCacheType;
}

function defaultsField(file: string, where: string, v: unknown): SamplingDefaults {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(file, where, 'defaults must be a mapping of sampling fields');
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(v as Raw)) {
    const bounds = DEFAULT_KEYS[key as keyof SamplingDefaults];
    if (!bounds) fail(file, where, `defaults.${key} is not a sampling default (use ${Object.keys(DEFAULT_KEYS).join(', ')})`);
    const [min, max, integer] = bounds;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
      fail(file, where, `defaults.${key} must be ${integer ? 'an integer' : 'a number'} between ${min} and ${max} (got ${JSON.stringify(value)})`);
    }
    out[key] = value;
  }
  return out;
}

/** One models-file entry over the server-wide settings. */
function entrySpec(config: InferenceConfig, file: string, raw: unknown, index: number): ModelSpec {
  const where = `models[${index}]`;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, where, 'must be a mapping with at least id and path');
  const e = raw as Raw;
  const unknown = Object.keys(e).filter((k) => !ENTRY_KEYS.has(k));
  if (unknown.length) fail(file, where, `has unknown field(s) ${unknown.join(', ')} (known: ${[...ENTRY_KEYS].join(', ')})`);
  if (typeof e.path !== 'string' || e.path.trim() === '') fail(file, where, 'needs a path (a GGUF file; relative paths are read from the models file\'s folder)');
  const path = isAbsolute(e.path) ? e.path : resolve(dirname(file), e.path);
  const id = e.id === undefined ? idFromFileName(path) : e.id;
  if (typeof id !== 'string' || !MODEL_NAME_PATTERN.test(id)) fail(file, where, `id must be 1-128 letters, digits or _ . : @ / + - (got ${JSON.stringify(e.id)})`);
  const kind = e.kind ?? 'chat';
  if (!MODEL_KINDS.includes(kind as ModelKind)) fail(file, where, `kind must be one of ${MODEL_KINDS.join(', ')} (got ${JSON.stringify(kind)})`);
  const spec = { ...baseSpec(config, id, path, kind as ModelKind, 'MODELS_FILE', false) } as { -readonly [K in keyof ModelSpec]: ModelSpec[K] };
  if (e.aliases !== undefined) {
    const aliases = typeof e.aliases === 'string' ? [e.aliases] : e.aliases;
    if (!Array.isArray(aliases) || !aliases.every((a) => typeof a === 'string' && MODEL_NAME_PATTERN.test(a))) {
      fail(file, where, 'aliases must be a list of names (letters, digits or _ . : @ / + -)');
    }
    spec.aliases = [...new Set(aliases as string[])];
  }
  if (e.context_size !== undefined) spec.contextSize = intField(file, where, 'context_size', e.context_size, 64, 1_048_576);
  if (e.slots !== undefined) spec.slots = intField(file, where, 'slots', e.slots, 1, 256);
  if (e.batch_size !== undefined) spec.batchSize = intField(file, where, 'batch_size', e.batch_size, 16, 65536);
  if (e.threads !== undefined) spec.threads = intField(file, where, 'threads', e.threads, 1, 1024);
  if (e.gpu_layers !== undefined) spec.gpuLayers = e.gpu_layers === 'auto' ? undefined : intField(file, where, 'gpu_layers', e.gpu_layers, 0, 100000);
  if (e.flash_attention !== undefined) spec.flashAttention = flashField(file, where, e.flash_attention);
  if (e.kv_cache_type !== undefined) spec.kvCacheTypeK = spec.kvCacheTypeV = kvField(file, where, 'kv_cache_type', e.kv_cache_type);
  if (e.kv_cache_type_k !== undefined) spec.kvCacheTypeK = kvField(file, where, 'kv_cache_type_k', e.kv_cache_type_k);
  if (e.kv_cache_type_v !== undefined) spec.kvCacheTypeV = kvField(file, where, 'kv_cache_type_v', e.kv_cache_type_v);
  if (spec.kvCacheTypeV !== 'f16' && spec.flashAttention === 'off') {
    fail(file, where, `kv_cache_type_v ${spec.kvCacheTypeV} needs flash_attention auto or on (llama.cpp quantizes the V cache only with flash attention)`);
  }
  if (e.keep_alive !== undefined) {
    const ms = parseKeepAlive(String(e.keep_alive));
    if (Number.isNaN(ms)) fail(file, where, `keep_alive must be a duration (30s, 5m, 2h), 0 or forever (got ${JSON.stringify(e.keep_alive)})`);
    spec.keepAliveMs = ms;
  }
  if (e.preload !== undefined) {
    if (typeof e.preload !== 'boolean') fail(file, where, 'preload must be true or false');
    spec.preload = e.preload;
  }
  if (e.defaults !== undefined) spec.defaults = defaultsField(file, where, e.defaults);
  return spec;
}

/** The models file's entries and its `default`; YAML or JSON (JSON is YAML too, but a JSON error reads better). */
export function readModelsFile(config: InferenceConfig, file: string): { specs: ModelSpec[]; defaultModel?: string; keepAliveSet: Set<string> } {
  if (!existsSync(file)) throw new ModelCatalogError(`MODELS_FILE ${file} does not exist`);
  const text = readFileSync(file, 'utf8');
  let doc: unknown;
  try {
    doc = extname(file).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ModelCatalogError(`${file}: not valid ${extname(file).toLowerCase() === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
  const root = Array.isArray(doc) ? { models: doc } : (doc as Raw | null);
  if (!root || typeof root !== 'object' || !Array.isArray(root.models)) {
    throw new ModelCatalogError(`${file}: expected a mapping with a "models" list (or a list of models)`);
  }
  const unknown = Object.keys(root).filter((k) => k !== 'models' && k !== 'default');
  if (unknown.length) throw new ModelCatalogError(`${file}: unknown top-level field(s) ${unknown.join(', ')} (known: models, default)`);
  if (root.default !== undefined && typeof root.default !== 'string') throw new ModelCatalogError(`${file}: default must be a model id or alias`);
  const keepAliveSet = new Set<string>();
  const specs = (root.models as unknown[]).map((raw, i) => {
    const spec = entrySpec(config, file, raw, i);
    if ((raw as Raw).keep_alive !== undefined) keepAliveSet.add(spec.id);
    return spec;
  });
  return { specs, defaultModel: root.default as string | undefined, keepAliveSet };
}

/** The catalog's answer: every entry, the default chat model, and the default embedding model (if any). */
export interface CatalogContents {
  readonly specs: readonly ModelSpec[];
  readonly defaultId: string;
  /** The model `/v1/embeddings`, the semantic cache and retrieval use when none is named; undefined = the default model. */
  readonly embeddingId: string | undefined;
  /** Files of MODELS_DIR that were skipped, and why (logged at start). */
  readonly warnings: readonly string[];
}

/**
 * Builds the registry's entries from the configuration, in a stable order (so a restart with the
 * same configuration gives the same registry): MODEL_PATH's model (when set, or when nothing else
 * is configured: the bundled one), the models file's entries in file order, EMBEDDING_MODEL_PATH,
 * then MODELS_DIR's files by name. A file already listed under another source is not listed twice.
 * Throws ModelCatalogError for a bad models file, clashing names or an unknown DEFAULT_MODEL.
 */
export function buildCatalog(config: InferenceConfig): CatalogContents {
  const specs: ModelSpec[] = [];
  const warnings: string[] = [];
  const byPath = new Map<string, ModelSpec>();
  const add = (spec: ModelSpec): void => {
    specs.push(spec);
    if (!byPath.has(spec.path)) byPath.set(spec.path, spec);
  };
  const registryConfigured = config.modelsDir !== undefined || config.modelsFile !== undefined;
  const servesModelPath = config.modelPathSet || !registryConfigured;
  let fileDefault: string | undefined;
  let keepAliveSet = new Set<string>();
  if (servesModelPath) add(baseSpec(config, config.modelName, config.modelPath, 'chat', 'MODEL_PATH', true));
  if (config.modelsFile) {
    const file = readModelsFile(config, config.modelsFile);
    fileDefault = file.defaultModel;
    keepAliveSet = file.keepAliveSet;
    for (const spec of file.specs) add(spec);
  }
  let embeddingId: string | undefined;
  if (config.embeddingModelPath !== config.modelPath) {
    const at = specs.findIndex((s) => s.path === config.embeddingModelPath);
    if (at >= 0) {
      // EMBEDDING_MODEL_PATH says what the file is for.
      if (specs[at].kind !== 'embedding') specs[at] = { ...specs[at], kind: 'embedding' };
      byPath.set(specs[at].path, specs[at]);
      embeddingId = specs[at].id;
    } else {
      const id = uniqueId(idFromFileName(config.embeddingModelPath), specs);
      add(baseSpec(config, id, config.embeddingModelPath, 'embedding', 'EMBEDDING_MODEL_PATH', false));
      embeddingId = id;
    }
  }
  if (config.modelsDir) {
    for (const path of scanModelsDir(config.modelsDir)) {
      if (byPath.has(path)) continue;
      const id = idFromFileName(path);
      if (!MODEL_NAME_PATTERN.test(id)) {
        warnings.push(`MODELS_DIR: ${basename(path)} is skipped: "${id}" is not a valid model id (letters, digits or _ . : @ / + -)`);
        continue;
      }
      const clash = specs.find((s) => s.id === id || s.aliases.includes(id));
      if (clash) {
        warnings.push(`MODELS_DIR: ${basename(path)} is skipped: "${id}" already names ${clash.id} (${clash.path})`);
        continue;
      }
      add(baseSpec(config, id, path, detectKind(path), 'MODELS_DIR', false));
    }
  }
  checkNames(specs);
  embeddingId ??= specs.find((s) => s.kind === 'embedding')?.id;
  const wanted = config.defaultModel ?? fileDefault;
  let defaultSpec: ModelSpec | undefined;
  if (wanted !== undefined) {
    defaultSpec = specs.find((s) => s.id === wanted || s.aliases.includes(wanted));
    if (!defaultSpec) throw new ModelCatalogError(`${config.defaultModel ? 'DEFAULT_MODEL' : 'the models file\'s default'} "${wanted}" names no configured model (${specs.map((s) => s.id).join(', ') || 'none'})`);
    if (defaultSpec.kind !== 'chat') throw new ModelCatalogError(`the default model "${wanted}" is a ${defaultSpec.kind} model; the default must be a chat model`);
  } else {
    defaultSpec = specs.find((s) => s.source === 'MODEL_PATH') ?? specs.find((s) => s.kind === 'chat');
  }
  if (!defaultSpec) {
    throw new ModelCatalogError(
      `no chat model configured: ${config.modelsDir ? `MODELS_DIR ${config.modelsDir} has no chat GGUF` : ''}${config.modelsDir && config.modelsFile ? ' and ' : ''}${config.modelsFile ? `MODELS_FILE ${config.modelsFile} lists none` : ''}; set MODEL_PATH or add one`,
    );
  }
  // The default model is loaded at start and never unloaded automatically, unless the models
  // file gives it a keep_alive of its own.
  const finalSpecs = specs.map((s) => (s.id === defaultSpec.id && !keepAliveSet.has(s.id) ? { ...s, keepAliveMs: -1 } : s));
  return { specs: finalSpecs, defaultId: defaultSpec.id, embeddingId, warnings };
}

function uniqueId(id: string, specs: readonly ModelSpec[]): string {
  let candidate = id;
  for (let n = 2; specs.some((s) => s.id === candidate || s.aliases.includes(candidate)); n++) candidate = `${id}-${n}`;
  return candidate;
}

/** Ids and aliases must name one model each. */
function checkNames(specs: readonly ModelSpec[]): void {
  const owner = new Map<string, string>();
  for (const s of specs) {
    for (const name of [s.id, ...s.aliases]) {
      const other = owner.get(name);
      if (other !== undefined) {
        throw new ModelCatalogError(
          other === s.id && name === s.id ? `two models have the id "${name}"` : `"${name}" names two models (${other} and ${s.id}); ids and aliases must be unique`,
        );
      }
      owner.set(name, s.id);
    }
  }
}
