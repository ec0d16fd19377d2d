import { ApiKeyRecord, keyStatus } from './key.types';
import type { IssuedKey } from './api-keys.service';

/** A key as the admin API and the CLI's `--json` show it: never the secret or its hash. */
export function keyJson(k: ApiKeyRecord): Record<string, unknown> {
  return {
    id: k.id,
    name: k.name,
    hint: k.hint,
    status: keyStatus(k),
    scopes: k.scopes,
    limits: { rpm: k.limits.rpm, tpm: k.limits.tpm, concurrency: k.limits.concurrency },
    budget: { day: k.budget.day, month: k.budget.month },
    models: k.models,
    model_limits: k.modelLimits,
    priority: k.priority,
    created_at: k.createdAt.toISOString(),
    last_used_at: k.lastUsedAt?.toISOString() ?? null,
    expires_at: k.expiresAt?.toISOString() ?? null,
    revoked_at: k.revokedAt?.toISOString() ?? null,
  };
}

/** A key at creation or rotation: the only time its secret is shown. */
export function issuedJson(issued: IssuedKey): Record<string, unknown> {
  return { ...keyJson(issued.record), key: issued.key };
}
