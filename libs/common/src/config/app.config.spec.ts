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

  it('never echoes a password from a bad URL', () => {
    expect(() => AppConfig.fromEnv({ REDIS_URL: 'http://user:s3cret@host' })).toThrow(/REDIS_URL must be a URL.*\*\*\*@host/);
    expect(() => AppConfig.fromEnv({ REDIS_URL: 'http://user:s3cret@host' })).not.toThrow(/s3cret/);
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
