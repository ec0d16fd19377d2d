import { hash, randomBytes } from 'node:crypto';

/** What a key may do. Generation routes need `generate`; `retrieval` adds and deletes collections and documents; `admin` guards operator routes. */
export const SCOPES = ['generate', 'retrieval', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/**
 * Priority classes of the scheduler's queue, with the numeric priority each one submits at
 * (higher runs first; equal priorities keep arrival order).
 */
export const PRIORITY_CLASSES = { low: -10, normal: 0, high: 10 } as const;
export type PriorityClass = keyof typeof PRIORITY_CLASSES;

/** Per-key limits; every number is per RATE_LIMIT_WINDOW_MS except concurrency; 0 = unlimited. */
export interface KeyLimits {
  /** Requests per window. */
  readonly rpm: number;
  /** Prompt + completion tokens per window, charged when a response's usage is known. */
  readonly tpm: number;
  /** Requests in flight at once. */
  readonly concurrency: number;
}

/**
 * Token budgets of a key: prompt + completion tokens per UTC day and per UTC month (0 = none).
 * Unlike the rate limits they hold for whole calendar periods and are enforced by the usage
 * library's BudgetService (429 `budget_exceeded`).
 */
export interface KeyBudget {
  readonly day: number;
  readonly month: number;
}

export const NO_BUDGET: KeyBudget = { day: 0, month: 0 };

/** Limits of a key on one model, on top of its own limits; 0 = none. Per RATE_LIMIT_WINDOW_MS. */
export interface ModelLimits {
  readonly rpm: number;
  readonly tpm: number;
}

/** Per-model limits by model name (id or alias as the operator wrote it). */
export type ModelLimitMap = Readonly<Record<string, ModelLimits>>;

/** One stored key. The secret itself is never stored: only its SHA-256 `hash`. */
export interface ApiKeyRecord {
  /** Stable public id (`key_…`), safe to log and show. */
  readonly id: string;
  /** Operator-chosen label, unique among keys that are not revoked. */
  readonly name: string;
  readonly hash: string;
  /** The secret's first and last characters (`sk-llm-AbCd…wXyZ`), so that an operator can tell keys apart. */
  readonly hint: string;
  readonly scopes: readonly Scope[];
  readonly limits: KeyLimits;
  readonly budget: KeyBudget;
  /** Models the key may use (ids or aliases); null = every model. */
  readonly models: readonly string[] | null;
  /** Requests and tokens per window on given models, besides the key's own limits. */
  readonly modelLimits: ModelLimitMap;
  readonly priority: PriorityClass;
  readonly createdAt: Date;
  readonly lastUsedAt: Date | null;
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
}

/** A key to insert; `budget` defaults to none, `models` to all, `modelLimits` to none. */
export type NewKeyRecord = Omit<ApiKeyRecord, 'lastUsedAt' | 'revokedAt' | 'budget' | 'models' | 'modelLimits'> & {
  readonly budget?: KeyBudget;
  readonly models?: readonly string[] | null;
  readonly modelLimits?: ModelLimitMap;
};

/** What `keys update` may change on an unrevoked key; absent fields stay as they are. */
export interface KeyChanges {
  readonly scopes?: readonly Scope[];
  readonly limits?: Partial<KeyLimits>;
  readonly budget?: Partial<KeyBudget>;
  readonly priority?: PriorityClass;
  /** `null` = never expires. */
  readonly expiresAt?: Date | null;
  /** `null` = every model. */
  readonly models?: readonly string[] | null;
  /** Replaces the per-model limits as a whole. */
  readonly modelLimits?: ModelLimitMap;
}

export type KeyStatus = 'active' | 'expired' | 'revoked';

export function keyStatus(key: Pick<ApiKeyRecord, 'expiresAt' | 'revokedAt'>, now = Date.now()): KeyStatus {
  if (key.revokedAt) return 'revoked';
  if (key.expiresAt && key.expiresAt.getTime() <= now) return 'expired';
  return 'active';
}

/** Who a request is, as the guards attach it to the request. */
export interface Principal {
  /** Key id (`key_…`), `static:<hash prefix>` for API_KEYS, `anonymous` when auth is disabled. */
  readonly id: string;
  readonly name: string;
  readonly scopes: readonly Scope[];
  readonly limits: KeyLimits;
  /** Token budgets (store keys only; static and anonymous callers have none). */
  readonly budget?: KeyBudget;
  /** Models the caller may use (ids or aliases); absent or null = every model. */
  readonly models?: readonly string[] | null;
  /** Per-model request and token limits (store keys only). */
  readonly modelLimits?: ModelLimitMap;
  readonly priority: PriorityClass;
  readonly source: 'store' | 'static' | 'anonymous';
}

/** Recognisable prefix of keys this platform generates (secret scanners can match it). */
export const KEY_PREFIX = 'sk-llm-';

/**
 * SHA-256 of the key. Keys carry 192 random bits, so a fast hash is as safe as a slow one
 * (nothing to brute-force) and keeps the lookup on the request path cheap.
 */
export function hashKey(key: string): string {
  return hash('sha256', key, 'hex');
}

export function generateKey(): string {
  return KEY_PREFIX + randomBytes(24).toString('base64url');
}

export function generateKeyId(): string {
  return `key_${randomBytes(8).toString('hex')}`;
}

export function keyHint(key: string): string {
  return `${key.slice(0, KEY_PREFIX.length + 4)}…${key.slice(-4)}`;
}

export const KEY_ID_PATTERN = /^key_[0-9a-f]{16}$/;
/** Names are labels for people and scripts: no spaces, and never shaped like an id. */
export const KEY_NAME_PATTERN = /^[A-Za-z0-9][\w.@-]{0,63}$/;

export function priorityOf(principal: Pick<Principal, 'priority'> | undefined): number {
  return PRIORITY_CLASSES[principal?.priority ?? 'normal'];
}

/**
 * Whether a caller may use a model, given by its id and aliases: a key limited to a list of
 * models may use those named in it (by id or by any alias); other callers every model.
 */
export function modelAllowed(principal: Pick<Principal, 'models'> | undefined, id: string, aliases: readonly string[] = []): boolean {
  const allowed = principal?.models;
  if (!allowed) return true;
  return allowed.includes(id) || aliases.some((a) => allowed.includes(a));
}

/** The caller's limits on a model (matched by id or alias), or null when it has none. */
export function modelLimitsOf(principal: Pick<Principal, 'modelLimits'> | undefined, id: string, aliases: readonly string[] = []): ModelLimits | null {
  const map = principal?.modelLimits;
  if (!map) return null;
  for (const name of [id, ...aliases]) {
    const limits = map[name];
    if (limits && (limits.rpm > 0 || limits.tpm > 0)) return limits;
  }
  return null;
}
