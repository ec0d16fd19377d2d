import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AppConfig, BUNDLED_MODEL, CONFIG_SPEC, ConfigError, projectRoot } from './app.config';

describe('AppConfig', () => {
  it('has working defaults with an empty environment', () => {
    const c = AppConfig.fromEnv({});
    expect(c).toMatchObject({ port: 8000, host: '0.0.0.0', gpu: 'auto', parallelSlots: 4, bodyLimit: 1024 * 1024, apiKeys: [] });
    expect(c.modelPath).toBe(BUNDLED_MODEL);
    expect(c.modelName).toBe('stories260K');
    // THREADS unset = chosen when the model loads (all cores with the engine addon, else cores - 1).
    expect(c.threads).toBeUndefined();
    expect(c).toMatchObject({ threadPoll: 50, engineAddon: 'auto', engineAddonPath: undefined });
  });

  it('parses the cache settings, the embedding model defaulting to the served one', () => {
    const d = AppConfig.fromEnv({});
    expect(d).toMatchObject({ redisUrl: undefined, cacheEnabled: true, cacheTtlSeconds: 3600, cacheMaxEntries: 10000, cacheSampled: false });
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
    ['LOG_PROMPTS', 'sometimes'],
    ['REDIS_URL', 'localhost:6379'],
    ['DATABASE_URL', 'mysql://db/x'],
    ['OTEL_EXPORTER_OTLP_ENDPOINT', 'collector:4318'],
    ['GPU_METRICS_INTERVAL_MS', '-5'],
    ['HEALTH_CHECK_TIMEOUT_MS', '10'],
    ['DATABASE_URL', 'mysql://localhost/db'],
    ['DATABASE_URL', 'not a url'],
    ['DATABASE_SCHEMA', 'Bad-Schema'],
    ['REDIS_URL', 'http://localhost:6379'],
    ['REDIS_KEY_PREFIX', 'has space'],
    ['TRUSTED_PROXIES', '10.0.0.1,nonsense'],
    ['TRUSTED_PROXIES', '10.0.0.0/33'],
    ['RATE_LIMIT_FAIL_MODE', 'sometimes'],
    ['KEY_STORE_FAIL_MODE', 'ajar'],
    ['RATE_LIMIT_WINDOW_MS', '10'],
    ['KEY_DEFAULT_RPM', '-5'],
    ['HEALTH_PUBLIC', 'perhaps'],
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

describe('observability variables', () => {
  it('default to off and parse when set', () => {
    expect(AppConfig.fromEnv({})).toMatchObject({
      logPrompts: false,
      redisUrl: undefined,
      databaseUrl: undefined,
      otlpEndpoint: undefined,
      otelServiceName: 'llm-api',
      gpuMetricsIntervalMs: 5000,
      healthCheckTimeoutMs: 1000,
    });
    const c = AppConfig.fromEnv({
      LOG_PROMPTS: 'true',
      REDIS_URL: 'redis://127.0.0.1:6379/3',
      DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318',
      GPU_METRICS_INTERVAL_MS: '0',
    });
    expect(c).toMatchObject({ logPrompts: true, redisUrl: 'redis://127.0.0.1:6379/3', otlpEndpoint: 'http://127.0.0.1:4318', gpuMetricsIntervalMs: 0 });
  });

  it('names the replica by INSTANCE_ID only: unset means no name (the host name is never used)', () => {
    expect(AppConfig.fromEnv({}).instanceId).toBeUndefined();
    expect(AppConfig.fromEnv({ INSTANCE_ID: 'replica-7' }).instanceId).toBe('replica-7');
    expect(AppConfig.fromEnv({ INSTANCE_ID: 'llm-api-7d9f-x2' }).instanceId).toBe('llm-api-7d9f-x2');
    expect(() => AppConfig.fromEnv({ INSTANCE_ID: 'a b' })).toThrow(ConfigError);
    expect(() => AppConfig.fromEnv({ INSTANCE_ID: 'x'.repeat(129) })).toThrow('Invalid configuration: INSTANCE_ID must be up to 128');
  });

  it('never echoes a password from a bad URL', () => {
    expect(() => AppConfig.fromEnv({ REDIS_URL: 'http://user:s3cret@host' })).toThrow(/REDIS_URL must be a URL.*\*\*\*@host/);
    expect(() => AppConfig.fromEnv({ REDIS_URL: 'http://user:s3cret@host' })).not.toThrow(/s3cret/);
  });

  it('AUTH_DISABLED_SCOPES defaults to generate and accepts only known scopes', () => {
    expect(AppConfig.fromEnv({}).authDisabledScopes).toEqual(['generate']);
    expect(AppConfig.fromEnv({ AUTH_DISABLED_SCOPES: 'generate, ADMIN,admin' }).authDisabledScopes).toEqual(['generate', 'admin']);
    expect(() => AppConfig.fromEnv({ AUTH_DISABLED_SCOPES: 'generate,root' })).toThrow('AUTH_DISABLED_SCOPES must be a comma list of generate, retrieval, admin');
  });

  it('CACHE_SCOPE is key by default, global on request', () => {
    expect(AppConfig.fromEnv({}).cacheScope).toBe('key');
    expect(AppConfig.fromEnv({ CACHE_SCOPE: 'global' }).cacheScope).toBe('global');
    expect(() => AppConfig.fromEnv({ CACHE_SCOPE: 'team' })).toThrow(ConfigError);
  });

  it('response_format schema limits default to OpenAI-like bounds', () => {
    expect(AppConfig.fromEnv({}).schemaLimits).toEqual({ maxBytes: 64 * 1024, maxEnumValues: 1000, maxDepth: 10, maxProperties: 1000 });
    expect(AppConfig.fromEnv({ SCHEMA_MAX_BYTES: '1mb', SCHEMA_MAX_DEPTH: '4' }).schemaLimits).toMatchObject({ maxBytes: 1024 * 1024, maxDepth: 4 });
  });
});

describe('key store and rate-limit configuration', () => {
  it('defaults to SQLite, in-memory counters, the seed\'s per-IP limits and documented fail modes', () => {
    const c = AppConfig.fromEnv({});
    expect(c).toMatchObject({
      databaseUrl: undefined,
      databaseSchema: 'public',
      redisUrl: undefined,
      redisKeyPrefix: 'llm:',
      trustedProxies: [],
      ipRpm: 100,
      ipStreamRpm: 50,
      rateLimitWindowMs: 60000,
      rateLimitFailMode: 'open',
      keyStoreFailMode: 'closed',
      keyCacheTtlMs: 5000,
      keyDefaults: { rpm: 600, tpm: 0, concurrency: 8 },
      healthPublic: true,
      metricsPublic: true,
    });
  });

  it('parses URLs, proxies and modes', () => {
    const c = AppConfig.fromEnv({
      DATABASE_URL: 'postgresql://u:p@db:5432/keys',
      REDIS_URL: 'rediss://cache:6380/2',
      TRUSTED_PROXIES: '10.0.0.0/8, ::1, Loopback,192.168.1.4',
      RATE_LIMIT_FAIL_MODE: 'CLOSED',
      METRICS_PUBLIC: 'false',
    });
    expect(c).toMatchObject({
      databaseUrl: 'postgresql://u:p@db:5432/keys',
      redisUrl: 'rediss://cache:6380/2',
      trustedProxies: ['10.0.0.0/8', '::1', 'loopback', '192.168.1.4'],
      rateLimitFailMode: 'closed',
      metricsPublic: false,
    });
  });
});

describe('configuration reference table (docs/CONFIGURATION.md)', () => {
  it('lists every variable with its real default', () => {
    const readme = readFileSync(join(projectRoot(), 'docs', 'CONFIGURATION.md'), 'utf8');
    for (const [name, spec] of Object.entries(CONFIG_SPEC)) {
      const row = readme.split('\n').find((line) => line.startsWith(`| \`${name}\` |`));
      expect(row).toBeDefined();
      expect(row?.split('|')[2].trim()).toBe(spec.defaultText);
    }
  });
});
