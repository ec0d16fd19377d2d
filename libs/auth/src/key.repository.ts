import { ApiKeyRecord, KeyChanges, ModelLimitMap, NewKeyRecord } from './key.types';

/**
 * Where keys live. Two implementations pass the same contract suite: SQLite (a file in
 * DATA_DIR, the default) and PostgreSQL (DATABASE_URL, shared by replicas). Methods reject
 * when the database cannot be reached; callers decide what an outage means.
 */
export abstract class KeyRepository {
  /** `sqlite:<file>` or `postgres:<schema>`: for logs, never credentials. */
  abstract readonly description: string;
  /** Creates or upgrades the schema; safe to run concurrently from several processes. */
  abstract migrate(): Promise<void>;
  /** Rejects with AuthException(KeyNameTaken) when an unrevoked key already has the name. */
  abstract insert(key: NewKeyRecord): Promise<void>;
  abstract findByHash(hash: string): Promise<ApiKeyRecord | null>;
  abstract findById(id: string): Promise<ApiKeyRecord | null>;
  /** The unrevoked key with that name, else the most recently created revoked one. */
  abstract findByName(name: string): Promise<ApiKeyRecord | null>;
  /** Every key, oldest first. */
  abstract list(): Promise<ApiKeyRecord[]>;
  /** Marks the key revoked; false when it was already revoked or does not exist. */
  abstract revoke(id: string, at: Date): Promise<boolean>;
  /** Swaps the secret of an unrevoked key (rotation); false when there is none. */
  abstract replaceSecret(id: string, hash: string, hint: string): Promise<boolean>;
  /** Changes limits, budgets, scopes, models, priority or expiry of an unrevoked key; false when there is none. */
  abstract update(id: string, changes: KeyChanges): Promise<boolean>;
  /** Batched last-used update; never moves a time backwards. */
  abstract touch(lastUsed: ReadonlyMap<string, Date>): Promise<void>;
  abstract close(): Promise<void>;
}

/** Scopes are stored as a comma list in both databases: portable and easy to read by hand. */
export function encodeScopes(scopes: readonly string[]): string {
  return scopes.join(',');
}

export function decodeScopes(text: string): ApiKeyRecord['scopes'] {
  return text.split(',').filter((s) => s.length > 0) as ApiKeyRecord['scopes'];
}

/** Allowed models as stored: a comma list, NULL = every model. */
export function encodeModels(models: readonly string[] | null | undefined): string | null {
  return models ? models.join(',') : null;
}

export function decodeModels(text: string | null): string[] | null {
  return text === null ? null : text.split(',').filter((s) => s.length > 0);
}

/** Per-model limits as stored: JSON `{"model": {"rpm": n, "tpm": n}}`. */
export function encodeModelLimits(limits: ModelLimitMap | undefined): string {
  return JSON.stringify(limits ?? {});
}

export function decodeModelLimits(text: string | null): ModelLimitMap {
  if (!text) return {};
  const raw = JSON.parse(text) as Record<string, { rpm?: number; tpm?: number }>;
  return Object.fromEntries(Object.entries(raw).map(([model, l]) => [model, { rpm: Number(l.rpm ?? 0), tpm: Number(l.tpm ?? 0) }]));
}

/** The columns an update sets, in both databases' names; only the fields present in `changes`. */
export function updatedColumns(changes: KeyChanges): [column: string, value: string | number | Date | null][] {
  const out: [string, string | number | Date | null][] = [];
  if (changes.scopes !== undefined) out.push(['scopes', encodeScopes(changes.scopes)]);
  if (changes.limits?.rpm !== undefined) out.push(['rpm', changes.limits.rpm]);
  if (changes.limits?.tpm !== undefined) out.push(['tpm', changes.limits.tpm]);
  if (changes.limits?.concurrency !== undefined) out.push(['concurrency', changes.limits.concurrency]);
  if (changes.budget?.day !== undefined) out.push(['budget_day', changes.budget.day]);
  if (changes.budget?.month !== undefined) out.push(['budget_month', changes.budget.month]);
  if (changes.priority !== undefined) out.push(['priority', changes.priority]);
  if (changes.expiresAt !== undefined) out.push(['expires_at', changes.expiresAt]);
  if (changes.models !== undefined) out.push(['models', encodeModels(changes.models)]);
  if (changes.modelLimits !== undefined) out.push(['model_limits', encodeModelLimits(changes.modelLimits)]);
  return out;
}
