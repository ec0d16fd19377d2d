import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { AppConfig, BUNDLED_MODEL, CONFIG_SPEC, ConfigError, ConfigSlice, configField, projectRoot } from './app.config';
import { CONFIG_DOC_BEGIN, CONFIG_DOC_END, renderConfigTables } from './config.docs';
import { loadEnvFile } from './env-file';

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
      otelExporterOtlpEndpoint: undefined,
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
    expect(c).toMatchObject({ logPrompts: true, redisUrl: 'redis://127.0.0.1:6379/3', otelExporterOtlpEndpoint: 'http://127.0.0.1:4318', gpuMetricsIntervalMs: 0 });
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
      rateLimitIpRpm: 100,
      rateLimitIpStreamRpm: 50,
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

describe('docs/CONFIGURATION.md', () => {
  const doc = readFileSync(join(projectRoot(), 'docs', 'CONFIGURATION.md'), 'utf8');
  const rows = doc.split('\n').filter((line) => /^\| `[A-Z][A-Z0-9_]*` \|/.test(line));

  it('lists every variable with its real default', () => {
    for (const [name, spec] of Object.entries(CONFIG_SPEC)) {
      const row = rows.find((line) => line.startsWith(`| \`${name}\` |`));
      expect([name, row]).toEqual([name, expect.any(String)]);
      expect([name, row?.split(' | ')[1].trim()]).toEqual([name, spec.defaultText]);
    }
  });

  it('lists no variable that the table does not have, each once', () => {
    const names = rows.map((line) => /^\| `([A-Z0-9_]+)`/.exec(line)?.[1]);
    expect(names.filter((n) => !(n! in CONFIG_SPEC))).toEqual([]);
    expect(new Set(names).size).toBe(names.length);
  });

  it('holds exactly what npm run docs:config generates', () => {
    const generated = doc.slice(doc.indexOf(CONFIG_DOC_BEGIN) + CONFIG_DOC_BEGIN.length, doc.indexOf(CONFIG_DOC_END)).trim();
    expect(generated).toBe(renderConfigTables());
  });
});

describe('the typed table', () => {
  it('gives every variable a camelCase field, and a default makes it non-optional', () => {
    const c = AppConfig.fromEnv({});
    for (const name of Object.keys(CONFIG_SPEC) as (keyof typeof CONFIG_SPEC)[]) expect([name, configField(name) in c]).toEqual([name, true]);
    expect(configField('RATE_LIMIT_IP_STREAM_RPM')).toBe('rateLimitIpStreamRpm');
    expect(configField('KV_CACHE_TYPE_K')).toBe('kvCacheTypeK');
    // Compile-time checks (ts-jest type-checks this file): a default gives `number`, "auto" keeps undefined.
    const port: number = c.port;
    const queueMax: number = c.queueMax;
    // @ts-expect-error THREADS has no default (auto): number | undefined
    const threads: number = c.threads;
    const format: 'auto' | 'pretty' | 'json' = c.logFormat;
    expect([port, queueMax, threads, format]).toEqual([8000, 64, undefined, 'auto']);
  });

  it('resolves paths and derives the computed fields', () => {
    const c = AppConfig.fromEnv({ DATA_DIR: 'some/dir', MODEL_PATH: 'm/tiny.gguf', KEY_DEFAULT_RPM: '7' });
    expect(c.dataDir).toBe(resolve('some/dir'));
    expect(c.modelPath).toBe(resolve('m/tiny.gguf'));
    expect(c.modelName).toBe('tiny');
    expect(c.modelPathSet).toBe(true);
    expect(c.embeddingModelPath).toBe(c.modelPath);
    expect(c.vectorStoreUri).toBe(resolve('some/dir', 'vectors'));
    expect(c.keyDefaults).toEqual({ rpm: 7, tpm: 0, concurrency: 8 });
    expect(AppConfig.fromEnv({ VECTOR_STORE_URI: 's3://b/p' }).vectorStoreUri).toBe('s3://b/p');
  });

  it('hands out one section as a typed slice', () => {
    const cache: ConfigSlice<'cache'> = AppConfig.fromEnv({ CACHE_TTL_SECONDS: '5' }).slice('cache');
    expect(cache.cacheTtlSeconds).toBe(5);
    expect(Object.keys(cache).sort()).toEqual(
      Object.entries(CONFIG_SPEC).filter(([, s]) => s.section === 'cache').map(([n]) => configField(n as keyof typeof CONFIG_SPEC)).sort(),
    );
    // @ts-expect-error a slice has only its own section's fields
    expect(cache.port).toBeUndefined();
  });

  it('gives the CLI the server URL from HOST and PORT (a wildcard bind address is loopback)', () => {
    expect(AppConfig.fromEnv({}).localUrl()).toBe('http://127.0.0.1:8000');
    expect(AppConfig.fromEnv({ PORT: '9000' }).localUrl()).toBe('http://127.0.0.1:9000');
    expect(AppConfig.fromEnv({ HOST: '10.1.2.3', PORT: '9000' }).localUrl()).toBe('http://10.1.2.3:9000');
    expect(AppConfig.fromEnv({ HOST: '::' }).localUrl()).toBe('http://[::1]:8000');
    expect(AppConfig.fromEnv({ HOST: '::1' }).localUrl()).toBe('http://[::1]:8000');
  });

  it('LOG_FORMAT is auto by default and validated', () => {
    expect(AppConfig.fromEnv({ LOG_FORMAT: 'JSON' }).logFormat).toBe('json');
    expect(() => AppConfig.fromEnv({ LOG_FORMAT: 'xml' })).toThrow('Invalid configuration: LOG_FORMAT must be one of auto | pretty | json (got "xml")');
    expect(AppConfig.fromEnv({}).docsEnabled).toBe(true);
  });
});

describe('env file', () => {
  const dir = (): string => mkdtempSync(join(tmpdir(), 'envfile-'));

  it('reads .env in the working directory; the real environment wins', () => {
    const cwd = dir();
    writeFileSync(join(cwd, '.env'), '# comment\nPORT=9123\nHOST="127.0.0.2"\nLOG_LEVEL=debug\n');
    const env: NodeJS.ProcessEnv = { LOG_LEVEL: 'warn' };
    const r = loadEnvFile(['node', 'main.js', 'health'], env, cwd);
    expect(r.file).toBe(join(cwd, '.env'));
    expect(env).toEqual({ PORT: '9123', HOST: '127.0.0.2', LOG_LEVEL: 'warn' });
    expect([...r.applied].sort()).toEqual(['HOST', 'PORT']);
    expect(r.argv).toEqual(['node', 'main.js', 'health']);
  });

  it('no .env: nothing happens', () => {
    const env: NodeJS.ProcessEnv = {};
    expect(loadEnvFile(['node', 'x'], env, dir())).toEqual({ file: undefined, applied: [], argv: ['node', 'x'] });
    expect(env).toEqual({});
  });

  it('--env-file <path> (and =path) and ENV_FILE name the file, and the option is taken out of argv', () => {
    const cwd = dir();
    writeFileSync(join(cwd, 'a.env'), 'PORT=1111\n');
    writeFileSync(join(cwd, '.env'), 'PORT=2222\n');
    const a: NodeJS.ProcessEnv = {};
    expect(loadEnvFile(['node', 'x', '--env-file', 'a.env', 'health'], a, cwd).argv).toEqual(['node', 'x', 'health']);
    expect(a.PORT).toBe('1111');
    const b: NodeJS.ProcessEnv = {};
    loadEnvFile(['node', 'x', '--env-file=a.env'], b, cwd);
    expect(b.PORT).toBe('1111');
    const c: NodeJS.ProcessEnv = { ENV_FILE: 'a.env' };
    loadEnvFile(['node', 'x'], c, cwd);
    expect(c.PORT).toBe('1111');
  });

  it('a named file that cannot be read is a configuration error', () => {
    expect(() => loadEnvFile(['node', 'x', '--env-file', 'missing.env'], {}, dir())).toThrow(ConfigError);
    expect(() => loadEnvFile(['node', 'x'], { ENV_FILE: 'missing.env' }, dir())).toThrow(/^Invalid configuration: ENV_FILE names a file that cannot be read \(ENOENT\)/);
  });
});
