import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AppConfig, BUNDLED_MODEL, CONFIG_SPEC, ConfigError, projectRoot } from './app.config';

describe('AppConfig', () => {
  it('has working defaults with an empty environment', () => {
    const c = AppConfig.fromEnv({});
    expect(c).toMatchObject({ port: 8000, host: '0.0.0.0', gpu: 'auto', parallelSlots: 4, bodyLimit: 1024 * 1024, apiKeys: [] });
    expect(c.modelPath).toBe(BUNDLED_MODEL);
    expect(c.modelName).toBe('stories260K');
    expect(c.threads).toBeGreaterThanOrEqual(1);
  });

  it('parses the cache settings, the embedding model defaulting to the served one', () => {
    const d = AppConfig.fromEnv({});
    expect(d).toMatchObject({ redisUrl: '', cacheEnabled: true, cacheTtlSeconds: 3600, cacheMaxEntries: 10000, cacheSampled: false });
    expect(d).toMatchObject({ semanticCacheEnabled: false, semanticCacheThreshold: 0.95, semanticCacheMaxEntries: 1000 });
    expect(d.embeddingModelPath).toBe(d.modelPath);
    const c = AppConfig.fromEnv({ REDIS_URL: 'rediss://u:p@host:6380/2', SEMANTIC_CACHE_THRESHOLD: '.9', EMBEDDING_MODEL_PATH: '/m/e.gguf' });
    expect(c).toMatchObject({ redisUrl: 'rediss://u:p@host:6380/2', semanticCacheThreshold: 0.9, embeddingModelPath: '/m/e.gguf' });
  });

  it('parses every kind of value', () => {
    const c = AppConfig.fromEnv({ PORT: '9000', GPU: 'CPU', THREADS: '3', API_KEYS: ' a, b ,,c', BODY_LIMIT: '512kb', AUTH_DISABLED: 'yes' });
    expect(c).toMatchObject({ port: 9000, gpu: 'cpu', threads: 3, apiKeys: ['a', 'b', 'c'], bodyLimit: 512 * 1024, authDisabled: true });
  });

  it.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['PORT', '-1'],
    ['GPU', 'tpu'],
    ['THREADS', '0'],
    ['THREADS', '1.5'],
    ['PARALLEL_SLOTS', '0'],
    ['CONTEXT_SIZE', '10'],
    ['BODY_LIMIT', 'huge'],
    ['BODY_LIMIT', '1gb'],
    ['AUTH_DISABLED', 'maybe'],
    ['LOG_LEVEL', 'loud'],
    ['REDIS_URL', 'localhost:6379'],
    ['REDIS_URL', 'http://cache'],
    ['CACHE_TTL_SECONDS', '0'],
    ['CACHE_NAMESPACE', 'a/b'],
    ['SEMANTIC_CACHE_THRESHOLD', '1.5'],
    ['SEMANTIC_CACHE_THRESHOLD', '0'],
    ['SEMANTIC_CACHE_THRESHOLD', 'high'],
    ['SEMANTIC_CACHE_MAX_ENTRIES', '0'],
  ])('%s=%s is rejected with a message naming the variable', (name, value) => {
    let error: unknown;
    try {
      AppConfig.fromEnv({ [name]: value });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).variable).toBe(name);
    expect((error as Error).message).toMatch(new RegExp(`^Invalid configuration: ${name} .*\\(got "${value.replace('.', '\\.')}"\\)$`));
    expect((error as Error).message).not.toContain('\n');
  });
});

describe('README configuration table', () => {
  it('lists every variable with its real default', () => {
    const readme = readFileSync(join(projectRoot(), 'README.md'), 'utf8');
    for (const [name, spec] of Object.entries(CONFIG_SPEC)) {
      const row = readme.split('\n').find((line) => line.startsWith(`| \`${name}\` |`));
      expect(row).toBeDefined();
      expect(row?.split('|')[2].trim()).toBe(spec.defaultText);
    }
  });
});
