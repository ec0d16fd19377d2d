import { Test } from '@nestjs/testing';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppConfig, EnvName } from '@app/common';
import { InferenceService } from '@app/inference';
import { AppModule } from '../../apps/api/src/app.module';
import { configureApp } from '../../apps/api/src/app.setup';

export const TEST_KEY = 'sk-test-key-0123456789';

export interface TestApp {
  readonly app: NestExpressApplication;
  readonly url: string;
  readonly key: string;
  readonly config: AppConfig;
  close(): Promise<void>;
}

/**
 * Boots the real API (real model, real HTTP server on a free loopback port) with the same setup
 * as main.ts. Only the configuration differs: a static test key, a private data folder (so a
 * fresh SQLite key store) and high default rate limits.
 */
export async function startTestApp(overrides: Partial<Record<EnvName, string>> = {}): Promise<TestApp> {
  const config = AppConfig.with({
    API_KEYS: TEST_KEY,
    LOG_LEVEL: 'error',
    PARALLEL_SLOTS: '2',
    THREADS: '1',
    CONTEXT_SIZE: '512',
    DATA_DIR: mkdtempSync(join(tmpdir(), 'llm-test-')),
    // Suites about other features send many requests from one address; the limits' own suite
    // sets the limits it tests.
    RATE_LIMIT_IP_RPM: '1000000',
    RATE_LIMIT_IP_STREAM_RPM: '1000000',
    KEY_DEFAULT_RPM: '1000000',
    ...overrides,
  });
  const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
    .overrideProvider(AppConfig)
    .useValue(config)
    .compile();
  const app = moduleRef.createNestApplication<NestExpressApplication>({ bodyParser: false, bufferLogs: true });
  configureApp(app);
  await app.listen(0, '127.0.0.1');
  await app.get(InferenceService).whenReady();
  const { port } = app.getHttpServer().address() as AddressInfo;
  return {
    app,
    url: `http://127.0.0.1:${port}`,
    key: TEST_KEY,
    config,
    close: () => app.close(),
  };
}

/** Reads an SSE response body into its `data:` payloads. */
export function parseSse(body: string): string[] {
  return body
    .split('\n\n')
    .map((block) => block.trim())
    .filter((block) => block.startsWith('data: '))
    .map((block) => block.slice('data: '.length));
}
