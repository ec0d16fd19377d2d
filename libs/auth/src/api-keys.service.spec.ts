import { parseBudget, parseExpiry, parseLimit, parsePriority, parseScopes } from './api-keys.service';
import { AuthErrorCode } from './auth.exception';
import { generateKey, hashKey, KEY_PREFIX, keyHint, keyStatus, priorityOf } from './key.types';

const NOW = Date.parse('2026-01-01T00:00:00.000Z');

describe('key options', () => {
  it('parses --expires as a duration, a date or never', () => {
    expect(parseExpiry('30d', NOW)?.toISOString()).toBe('2026-01-31T00:00:00.000Z');
    expect(parseExpiry('12h', NOW)?.toISOString()).toBe('2026-01-01T12:00:00.000Z');
    expect(parseExpiry('90m', NOW)?.toISOString()).toBe('2026-01-01T01:30:00.000Z');
    expect(parseExpiry('2027-03-01', NOW)?.toISOString()).toBe('2027-03-01T00:00:00.000Z');
    expect(parseExpiry('never', NOW)).toBeNull();
  });

  it.each(['tomorrow', '5x', '2025-12-31', '0d', '2026-13-45'])('rejects --expires %s as a usage error', (text) => {
    expect(() => parseExpiry(text, NOW)).toThrow(expect.objectContaining({ code: AuthErrorCode.InvalidKeyOptions }));
  });

  it('parses scopes, limits and priorities strictly', () => {
    expect(parseScopes('generate, ADMIN,generate')).toEqual(['generate', 'admin']);
    expect(() => parseScopes('generate,root')).toThrow(/scopes must be/);
    expect(() => parseScopes(' , ')).toThrow(/scopes must be/);
    expect(parseLimit('rpm', '60')).toBe(60);
    expect(parseLimit('rpm', 'unlimited')).toBe(0);
    for (const bad of ['-1', '1.5', 'abc', '99999999999']) expect(() => parseLimit('rpm', bad)).toThrow(/rpm must be a whole number/);
    expect(parseBudget('budget-day', '2m')).toBe(2_000_000);
    expect(parseBudget('budget-day', '50k')).toBe(50_000);
    expect(parseBudget('budget-day', '1_000')).toBe(1000);
    expect(parseBudget('budget-day', 'none')).toBe(0);
    for (const bad of ['-1', '1.5', 'lots', '2t', '']) expect(() => parseBudget('budget-day', bad)).toThrow(/budget-day must be a whole number of tokens/);
    expect(parsePriority('HIGH')).toBe('high');
    expect(() => parsePriority('urgent')).toThrow(/priority must be one of low, normal, high/);
  });
});

describe('keys', () => {
  it('are random, recognisable, and shown only as a hint', () => {
    const a = generateKey();
    expect(a.startsWith(KEY_PREFIX)).toBe(true);
    expect(a).not.toBe(generateKey());
    expect(hashKey(a)).toMatch(/^[0-9a-f]{64}$/);
    expect(keyHint(a)).toBe(`${a.slice(0, 11)}…${a.slice(-4)}`);
  });

  it('have a status from their revoke and expiry times', () => {
    expect(keyStatus({ revokedAt: null, expiresAt: null })).toBe('active');
    expect(keyStatus({ revokedAt: null, expiresAt: new Date(NOW) }, NOW + 1)).toBe('expired');
    expect(keyStatus({ revokedAt: new Date(NOW), expiresAt: null })).toBe('revoked');
  });

  it('map priority classes to scheduler priorities, higher first', () => {
    expect(priorityOf({ priority: 'high' })).toBeGreaterThan(priorityOf({ priority: 'normal' }));
    expect(priorityOf({ priority: 'normal' })).toBeGreaterThan(priorityOf({ priority: 'low' }));
    expect(priorityOf(undefined)).toBe(0);
  });
});
