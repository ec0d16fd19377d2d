import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canonicalSampling, exactKey, isDeterministic, modelFingerprint, semanticScope } from './cache.keys';
import type { CacheableRequest } from './caching.types';

const base: CacheableRequest = {
  endpoint: 'completions',
  promptTokens: [10, 20, 30],
  billedPromptTokens: 4,
  maxTokens: 16,
  requestedMaxTokens: 16,
  sampling: { temperature: 0.7, topP: 0.9, seed: 1 },
  stop: ['\n'],
  text: 'hello',
};

describe('cache keys', () => {
  const key = (r: Partial<CacheableRequest>, model = 'm1'): string => exactKey({ ...base, ...r }, model);

  it('is a SHA-256 hex digest, stable for equal requests', () => {
    expect(key({})).toMatch(/^[0-9a-f]{64}$/);
    expect(key({})).toBe(key({ sampling: { seed: 1, topP: 0.9, temperature: 0.7 } }));
    expect(key({})).toBe(key({ sampling: { temperature: 0.7, topP: 0.9, seed: 1, topK: undefined } }));
    // The text and billing are not output-shaping: the tokens are.
    expect(key({})).toBe(key({ text: 'other', billedPromptTokens: 5 }));
  });

  it.each<[string, Partial<CacheableRequest>]>([
    ['model', {}],
    ['endpoint', { endpoint: 'chat' }],
    ['prompt tokens', { promptTokens: [10, 20, 31] }],
    ['token boundaries', { promptTokens: [10, 2030] }],
    ['max_tokens', { maxTokens: 17 }],
    ['temperature', { sampling: { temperature: 0.8, topP: 0.9, seed: 1 } }],
    ['top_p', { sampling: { temperature: 0.7, topP: 0.8, seed: 1 } }],
    ['seed', { sampling: { temperature: 0.7, topP: 0.9, seed: 2 } }],
    ['a penalty', { sampling: { temperature: 0.7, topP: 0.9, seed: 1, repeatPenalty: 1.1 } }],
    ['ignore_eos', { sampling: { temperature: 0.7, topP: 0.9, seed: 1, ignoreEos: true } }],
    ['stop', { stop: ['\n', 'User:'] }],
  ])('changes with %s', (field, change) => {
    expect(key(change, field === 'model' ? 'm2' : 'm1')).not.toBe(key({}));
  });

  it('ignores top-p/top-k/min-p/seed at temperature 0, where they do nothing', () => {
    const greedy = { temperature: 0 };
    expect(key({ sampling: greedy })).toBe(key({ sampling: { temperature: 0, topP: 0.5, topK: 40, minP: 0.1, seed: 3 } }));
    expect(key({ sampling: greedy })).not.toBe(key({ sampling: { temperature: 0, repeatPenalty: 1.2 } }));
    expect(canonicalSampling({ temperature: 0, topP: 0.5, ignoreEos: false })).toEqual([['ignoreEos', false], ['temperature', 0]]);
  });

  it('calls greedy or seeded requests deterministic', () => {
    expect(isDeterministic({ temperature: 0 })).toBe(true);
    expect(isDeterministic({ temperature: 1, seed: 0 })).toBe(true);
    expect(isDeterministic({ temperature: 0.1 })).toBe(false);
  });

  it('scopes the semantic cache by model, embedder and output-shaping fields, not by the prompt', () => {
    const scope = (r: Partial<CacheableRequest>, embedder = 'e1') => semanticScope({ ...base, ...r }, 'm1', embedder);
    expect(scope({ promptTokens: [1], text: 'something else' })).toBe(scope({}));
    expect(scope({}, 'e2')).not.toBe(scope({}));
    expect(scope({ requestedMaxTokens: 8 })).not.toBe(scope({}));
    expect(scope({ stop: [] })).not.toBe(scope({}));
    expect(scope({ sampling: { temperature: 0.2 } })).not.toBe(scope({}));
  });

  it('CACHE_SCOPE=key: another caller never shares an exact key or a semantic scope', () => {
    expect(exactKey(base, 'm1', 'key:key_a')).not.toBe(exactKey(base, 'm1', 'key:key_b'));
    expect(exactKey(base, 'm1', 'key:key_a')).toBe(exactKey(base, 'm1', 'key:key_a'));
    expect(semanticScope(base, 'm1', 'e1', 'key:key_a')).not.toBe(semanticScope(base, 'm1', 'e1', 'key:key_b'));
    expect(exactKey(base, 'm1', '')).not.toBe(exactKey(base, 'm1', 'key:key_a'));
  });

  it('fingerprints a model file by size, head and tail', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fp-'));
    const big = Buffer.alloc(3 * 1024 * 1024, 1);
    writeFileSync(join(dir, 'a.gguf'), big);
    big[big.length - 1] = 2; // differs only in the last byte
    writeFileSync(join(dir, 'b.gguf'), big);
    writeFileSync(join(dir, 'c.gguf'), Buffer.alloc(10, 1));
    const [a, b, c, a2] = await Promise.all(['a', 'b', 'c', 'a'].map((n) => modelFingerprint(join(dir, `${n}.gguf`))));
    expect(a).toMatch(/^[0-9a-f]{32}$/);
    expect(a).toBe(a2);
    expect(new Set([a, b, c]).size).toBe(3);
    await expect(modelFingerprint(join(dir, 'missing.gguf'))).rejects.toThrow();
  });
});
