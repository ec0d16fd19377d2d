import { ApiKeyRecord, IssuedKey, issuedJson, keyJson, keyStatus } from '@app/auth';

export { issuedJson, keyJson };

const limit = (n: number): string => (n === 0 ? 'unlimited' : String(n));
const budget = (n: number): string => (n === 0 ? 'none' : String(n));
const when = (d: Date | null, none = '-'): string => (d ? d.toISOString().slice(0, 16).replace('T', ' ') : none);

export function formatKey(k: ApiKeyRecord): string {
  const rows: [string, string][] = [
    ['id', k.id],
    ['name', k.name],
    ['key', k.hint],
    ['status', keyStatus(k)],
    ['scopes', k.scopes.join(',')],
    ['rpm', limit(k.limits.rpm)],
    ['tpm', limit(k.limits.tpm)],
    ['concurrency', limit(k.limits.concurrency)],
    ['budget/day', budget(k.budget.day)],
    ['budget/month', budget(k.budget.month)],
    ['models', k.models ? k.models.join(',') : 'all'],
    ...Object.entries(k.modelLimits).map(([model, l]): [string, string] => [`  ${model}`, `rpm ${limit(l.rpm)}, tpm ${limit(l.tpm)}`]),
    ['priority', k.priority],
    ['created', when(k.createdAt)],
    ['last used', when(k.lastUsedAt, 'never')],
    ['expires', when(k.expiresAt, 'never')],
  ];
  if (k.revokedAt) rows.push(['revoked', when(k.revokedAt)]);
  return rows.map(([name, value]) => `  ${name.padEnd(13)} ${value}`).join('\n') + '\n';
}

export function formatIssued(verb: 'Created' | 'Rotated', issued: IssuedKey): string {
  return (
    `${verb} API key ${issued.record.id} "${issued.record.name}":\n${formatKey(issued.record)}\n` +
    `  ${issued.key}\n\n` +
    'This is the only time the key is shown: store it now (only its hash is kept).\n'
  );
}

export function formatTable(keys: readonly ApiKeyRecord[]): string {
  if (keys.length === 0) return 'No API keys. Create one with: npm run cli -- keys create --name <name>\n';
  const header = ['ID', 'NAME', 'KEY', 'STATUS', 'SCOPES', 'MODELS', 'RPM', 'TPM', 'CONC', 'BUDGET/DAY', 'BUDGET/MONTH', 'PRIORITY', 'CREATED', 'LAST USED', 'EXPIRES'];
  const rows = keys.map((k) => [
    k.id,
    k.name,
    k.hint,
    keyStatus(k),
    k.scopes.join(','),
    k.models ? k.models.join(',') : 'all',
    limit(k.limits.rpm),
    limit(k.limits.tpm),
    limit(k.limits.concurrency),
    budget(k.budget.day),
    budget(k.budget.month),
    k.priority,
    when(k.createdAt),
    when(k.lastUsedAt, 'never'),
    when(k.expiresAt, 'never'),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n') + '\n';
}
