import { Injectable, Logger, OnApplicationShutdown, Inject } from '@nestjs/common';
import type { AuthConfig } from './auth.config';
import { AppConfig } from '@app/common';
import { AuthErrorCode, AuthException } from './auth.exception';
import { KeyRepository } from './key.repository';
import {
  ApiKeyRecord,
  generateKey,
  generateKeyId,
  hashKey,
  KEY_ID_PATTERN,
  KEY_NAME_PATTERN,
  KeyChanges,
  keyHint,
  ModelLimitMap,
  PRIORITY_CLASSES,
  PriorityClass,
  Scope,
  SCOPES,
} from './key.types';

/** Options of {@link ApiKeysService.create}; limits default to KEY_DEFAULT_* (0 = unlimited). */
export interface CreateKeyOptions {
  readonly name: string;
  /** Default `['generate']`. */
  readonly scopes?: readonly Scope[];
  readonly rpm?: number;
  readonly tpm?: number;
  readonly concurrency?: number;
  /** Prompt + completion tokens per UTC day; 0 (default) = no budget. */
  readonly budgetDay?: number;
  /** Prompt + completion tokens per UTC month; 0 (default) = no budget. */
  readonly budgetMonth?: number;
  /** Default `normal`. */
  readonly priority?: PriorityClass;
  /** Default: never expires. */
  readonly expiresAt?: Date | null;
  /** Models the key may use (ids or aliases); default (and null) every model. */
  readonly models?: readonly string[] | null;
  /** Requests per window on given models (0 removes a model's limit). */
  readonly modelRpm?: Readonly<Record<string, number>>;
  /** Prompt + completion tokens per window on given models (0 removes a model's limit). */
  readonly modelTpm?: Readonly<Record<string, number>>;
}

/** Options of {@link ApiKeysService.update}: only the fields given change. */
export type UpdateKeyOptions = Partial<Omit<CreateKeyOptions, 'name'>>;

/** Largest token budget: far beyond any real use, and exact in a JavaScript number. */
const MAX_BUDGET = 1e15;

/** A key as returned once, at creation or rotation: the only time the secret exists in clear. */
export interface IssuedKey {
  readonly key: string;
  readonly record: ApiKeyRecord;
}

const invalid = (message: string): AuthException => new AuthException(AuthErrorCode.InvalidKeyOptions, message);

const DURATION = /^(\d+)\s*(m|h|d|w|y)$/i;
const DURATION_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000, y: 31_536_000_000 };

/**
 * Parses `--expires`: a duration from now (`90m`, `12h`, `30d`, `8w`, `1y`), an ISO date or date-time,
 * or `never`. Rejects times in the past.
 */
export function parseExpiry(text: string, now = Date.now()): Date | null {
  const t = text.trim();
  if (t === '' || t.toLowerCase() === 'never') return null;
  const d = DURATION.exec(t);
  const at = d ? new Date(now + Number(d[1]) * DURATION_MS[d[2].toLowerCase()]) : /^\d{4}-\d{2}-\d{2}/.test(t) ? new Date(t) : null;
  if (!at || Number.isNaN(at.getTime())) {
    throw invalid(`expires must be a duration (90m, 12h, 30d, 8w, 1y), an ISO date (2027-01-31) or "never" (got ${JSON.stringify(text)})`);
  }
  if (at.getTime() <= now) throw invalid(`expires must be in the future (got ${at.toISOString()})`);
  return at;
}

export function parseScopes(text: string): Scope[] {
  const scopes = [...new Set(text.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s.length > 0))];
  const unknown = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
  if (scopes.length === 0 || unknown.length > 0) {
    throw invalid(`scopes must be a comma list of ${SCOPES.join(', ')} (got ${JSON.stringify(text)})`);
  }
  return scopes as Scope[];
}

export function parsePriority(text: string): PriorityClass {
  const p = text.trim().toLowerCase();
  if (!(p in PRIORITY_CLASSES)) throw invalid(`priority must be one of ${Object.keys(PRIORITY_CLASSES).join(', ')} (got ${JSON.stringify(text)})`);
  return p as PriorityClass;
}

/** Parses `--budget-day` / `--budget-month`: tokens, with an optional k/m/g suffix (`2m` = 2,000,000); 0 or "none" = no budget. */
export function parseBudget(name: string, text: string): number {
  const t = text.trim().toLowerCase().replace(/_/g, '');
  if (t === 'none' || t === 'unlimited') return 0;
  const m = /^(\d{1,15})([kmg])?$/.exec(t);
  const n = m ? Number(m[1]) * ({ k: 1e3, m: 1e6, g: 1e9 }[m[2] as 'k' | 'm' | 'g'] ?? 1) : NaN;
  if (!Number.isSafeInteger(n) || n > MAX_BUDGET) {
    throw invalid(`${name} must be a whole number of tokens, optionally with k, m or g (2m = 2,000,000); 0 or "none" = no budget (got ${JSON.stringify(text)})`);
  }
  return n;
}

export function parseLimit(name: string, text: string): number {
  const t = text.trim().toLowerCase();
  if (t === 'unlimited') return 0;
  if (!/^\d{1,10}$/.test(t) || Number(t) > 2_147_483_647) {
    throw invalid(`${name} must be a whole number (0 or "unlimited" = no limit) (got ${JSON.stringify(text)})`);
  }
  return Number(t);
}

/** Model names as the registry accepts them (ids and aliases). */
const MODEL_NAME = /^[A-Za-z0-9][\w.:@/+-]{0,127}$/;

/** Parses `--models`: a comma list of model ids or aliases; `all` or `*` = every model (null). */
export function parseModels(text: string): string[] | null {
  const t = text.trim();
  if (t === '*' || t.toLowerCase() === 'all') return null;
  const models = [...new Set(t.split(',').map((m) => m.trim()).filter((m) => m.length > 0))];
  if (models.length === 0 || models.some((m) => !MODEL_NAME.test(m))) {
    throw invalid(`models must be a comma list of model ids or aliases, or "all" (got ${JSON.stringify(text)})`);
  }
  return models;
}

/** Parses `--model-rpm` / `--model-tpm`: `model=n` pairs separated by commas (0 = no limit on that model). */
export function parseModelLimit(name: string, text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of text.split(',').map((p) => p.trim()).filter((p) => p.length > 0)) {
    const at = part.lastIndexOf('=');
    const model = at > 0 ? part.slice(0, at).trim() : '';
    const value = at > 0 ? part.slice(at + 1).trim() : '';
    if (!MODEL_NAME.test(model) || !/^\d{1,10}$/.test(value) || Number(value) > 2_147_483_647) {
      throw invalid(`${name} must be model=number pairs separated by commas, e.g. chat=60,embed=600 (got ${JSON.stringify(text)})`);
    }
    out[model] = Number(value);
  }
  if (Object.keys(out).length === 0) throw invalid(`${name} needs at least one model=number pair (got ${JSON.stringify(text)})`);
  return out;
}

/** Per-model limits after applying `--model-rpm` / `--model-tpm` to `current`; models left without limits are dropped. */
function mergeModelLimits(current: ModelLimitMap, rpm: Readonly<Record<string, number>> = {}, tpm: Readonly<Record<string, number>> = {}): ModelLimitMap {
  const out: Record<string, { rpm: number; tpm: number }> = {};
  for (const [model, l] of Object.entries(current)) out[model] = { ...l };
  for (const [model, n] of Object.entries(rpm)) out[model] = { rpm: n, tpm: out[model]?.tpm ?? 0 };
  for (const [model, n] of Object.entries(tpm)) out[model] = { rpm: out[model]?.rpm ?? 0, tpm: n };
  return Object.fromEntries(Object.entries(out).filter(([, l]) => l.rpm > 0 || l.tpm > 0));
}

/** Checks the options that are present (create passes all of them, update only the changed ones). */
function validate(o: UpdateKeyOptions): void {
  for (const name of ['rpm', 'tpm', 'concurrency'] as const) {
    const value = o[name];
    if (value !== undefined && (!Number.isInteger(value) || value < 0 || value > 2_147_483_647)) throw invalid(`${name} must be a whole number >= 0 (got ${value})`);
  }
  for (const [name, value] of [['budget-day', o.budgetDay], ['budget-month', o.budgetMonth]] as const) {
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 0 || value > MAX_BUDGET)) throw invalid(`${name} must be a whole number of tokens >= 0 (got ${value})`);
  }
  if (o.scopes !== undefined && (o.scopes.length === 0 || o.scopes.some((s) => !SCOPES.includes(s)))) throw invalid(`scopes must be among ${SCOPES.join(', ')}`);
  if (o.priority !== undefined && !(o.priority in PRIORITY_CLASSES)) throw invalid(`priority must be one of ${Object.keys(PRIORITY_CLASSES).join(', ')}`);
  if (o.expiresAt && o.expiresAt.getTime() <= Date.now()) throw invalid('expires must be in the future');
  if (o.models && (o.models.length === 0 || o.models.some((m) => !MODEL_NAME.test(m)))) throw invalid('models must be model ids or aliases');
  for (const [name, map] of [['model-rpm', o.modelRpm], ['model-tpm', o.modelTpm]] as const) {
    for (const [model, n] of Object.entries(map ?? {})) {
      if (!MODEL_NAME.test(model) || !Number.isInteger(n) || n < 0 || n > 2_147_483_647) throw invalid(`${name} for ${JSON.stringify(model)} must be a whole number >= 0 (got ${n})`);
    }
  }
}

/**
 * Key management (the CLI's `keys` commands and tests): create, list, revoke, rotate. Also owns
 * the store's schema: `ready()` runs the migrations once, and again after a failure.
 */
@Injectable()
export class ApiKeysService implements OnApplicationShutdown {
  readonly #logger = new Logger('KeyStore');
  #ready: Promise<void> | null = null;

  constructor(
    private readonly repo: KeyRepository,
    @Inject(AppConfig) private readonly config: AuthConfig,
  ) {}

  /** Where keys are stored, for logs and the CLI (no credentials). */
  get storeDescription(): string {
    return this.repo.description;
  }

  /** Resolves once the schema is current; a failed attempt is retried on the next call. */
  ready(): Promise<void> {
    this.#ready ??= this.repo.migrate().catch((err: unknown) => {
      this.#ready = null;
      throw err;
    });
    return this.#ready;
  }

  async create(options: CreateKeyOptions): Promise<IssuedKey> {
    if (!KEY_NAME_PATTERN.test(options.name) || KEY_ID_PATTERN.test(options.name)) {
      throw invalid(`name must be 1-64 letters, digits or . _ @ - starting with a letter or digit (got ${JSON.stringify(options.name)})`);
    }
    const defaults = this.config.keyDefaults;
    const limits = {
      rpm: options.rpm ?? defaults.rpm,
      tpm: options.tpm ?? defaults.tpm,
      concurrency: options.concurrency ?? defaults.concurrency,
    };
    const budget = { day: options.budgetDay ?? 0, month: options.budgetMonth ?? 0 };
    const scopes = options.scopes ?? ['generate'];
    const priority = options.priority ?? 'normal';
    validate({ ...options, ...limits, scopes, priority, budgetDay: budget.day, budgetMonth: budget.month });
    await this.ready();
    const key = generateKey();
    const record: ApiKeyRecord = {
      id: generateKeyId(),
      name: options.name,
      hash: hashKey(key),
      hint: keyHint(key),
      scopes: [...new Set(scopes)],
      limits,
      budget,
      models: options.models ? [...new Set(options.models)] : null,
      modelLimits: mergeModelLimits({}, options.modelRpm, options.modelTpm),
      priority,
      createdAt: new Date(),
      lastUsedAt: null,
      expiresAt: options.expiresAt ?? null,
      revokedAt: null,
    };
    await this.repo.insert(record);
    this.#logger.log(`Created API key ${record.id} "${record.name}"`);
    return { key, record };
  }

  async list(): Promise<ApiKeyRecord[]> {
    await this.ready();
    return this.repo.list();
  }

  /** Finds a key by id (`key_…`) or by name (the unrevoked one, else the latest revoked one). */
  async resolve(ref: string): Promise<ApiKeyRecord> {
    await this.ready();
    const found = KEY_ID_PATTERN.test(ref) ? await this.repo.findById(ref) : await this.repo.findByName(ref);
    if (!found) throw new AuthException(AuthErrorCode.KeyNotFound, `No API key with id or name ${JSON.stringify(ref)}`);
    return found;
  }

  /** Revokes at once in the store (servers notice within KEY_CACHE_TTL_MS). Idempotent. */
  async revoke(ref: string): Promise<{ record: ApiKeyRecord; alreadyRevoked: boolean }> {
    const key = await this.resolve(ref);
    const at = new Date();
    const changed = await this.repo.revoke(key.id, at);
    if (changed) this.#logger.log(`Revoked API key ${key.id} "${key.name}"`);
    const record = (await this.repo.findById(key.id)) ?? key;
    return { record, alreadyRevoked: !changed };
  }

  /**
   * Changes an unrevoked key's limits, budgets, scopes, models, per-model limits, priority or expiry (servers see it
   * within KEY_CACHE_TTL_MS). Fields not given stay as they are.
   */
  async update(ref: string, options: UpdateKeyOptions): Promise<ApiKeyRecord> {
    validate(options);
    const current = await this.resolve(ref);
    if (current.revokedAt) throw new AuthException(AuthErrorCode.KeyNotFound, `API key ${current.id} "${current.name}" is revoked; create a new one instead`);
    const changes: KeyChanges = {
      scopes: options.scopes ? [...new Set(options.scopes)] : undefined,
      limits: { rpm: options.rpm, tpm: options.tpm, concurrency: options.concurrency },
      budget: { day: options.budgetDay, month: options.budgetMonth },
      priority: options.priority,
      expiresAt: options.expiresAt,
      models: options.models === undefined ? undefined : options.models ? [...new Set(options.models)] : null,
      modelLimits: options.modelRpm || options.modelTpm ? mergeModelLimits(current.modelLimits, options.modelRpm, options.modelTpm) : undefined,
    };
    if (!(await this.repo.update(current.id, changes))) throw new AuthException(AuthErrorCode.KeyNotFound, `API key ${current.id} was revoked meanwhile`);
    this.#logger.log(`Updated API key ${current.id} "${current.name}"`);
    return (await this.repo.findById(current.id)) ?? current;
  }

  /** Gives the key a new secret; the old one stops working (within KEY_CACHE_TTL_MS on running servers). */
  async rotate(ref: string): Promise<IssuedKey> {
    const current = await this.resolve(ref);
    if (current.revokedAt) {
      throw new AuthException(AuthErrorCode.KeyNotFound, `API key ${current.id} "${current.name}" is revoked; create a new one instead`);
    }
    const key = generateKey();
    if (!(await this.repo.replaceSecret(current.id, hashKey(key), keyHint(key)))) {
      throw new AuthException(AuthErrorCode.KeyNotFound, `API key ${current.id} was revoked meanwhile`);
    }
    this.#logger.log(`Rotated API key ${current.id} "${current.name}"`);
    return { key, record: (await this.repo.findById(current.id)) ?? current };
  }

  async onApplicationShutdown(): Promise<void> {
    await this.repo.close().catch(() => undefined);
  }
}
