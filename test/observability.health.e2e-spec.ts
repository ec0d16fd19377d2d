import { Test } from '@nestjs/testing';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { AppConfig } from '@app/common';
import { InferenceService } from '@app/inference';
import { DatabaseProbe, RedisProbe } from '@app/observability';
import { AppModule } from '../apps/api/src/app.module';
import { configureApp } from '../apps/api/src/app.setup';
import { metric, scrape, waitFor } from './support/metrics';
import { freePort } from './support/server-process';
import { TEST_KEY } from './support/test-app';

const POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/test';

interface HeldApp {
  app: NestExpressApplication;
  url: string;
  inference: InferenceService;
  /** Lets the (real) model load begin; resolves when it is loaded. */
  releaseModel(): Promise<unknown>;
}

/** Boots the real app but holds the model load until releaseModel(): the "loading" window made wide. */
async function startHeldApp(overrides: Record<string, string> = {}): Promise<HeldApp> {
  const config = AppConfig.with({
    API_KEYS: TEST_KEY,
    LOG_LEVEL: 'error',
    PARALLEL_SLOTS: '1',
    THREADS: '1',
    CONTEXT_SIZE: '1024',
    DATA_DIR: mkdtempSync(join(tmpdir(), 'llm-health-')),
    ...overrides,
  });
  const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).overrideProvider(AppConfig).useValue(config).compile();
  const app = moduleRef.createNestApplication<NestExpressApplication>({ bodyParser: false, bufferLogs: true });
  configureApp(app);
  const inference = app.get(InferenceService);
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const load = inference.whenReady.bind(inference);
  let loading: ReturnType<InferenceService['whenReady']> | undefined;
  jest.spyOn(inference, 'whenReady').mockImplementation(() => (loading ??= gate.then(load)));
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as AddressInfo;
  return {
    app,
    url: `http://127.0.0.1:${port}`,
    inference,
    releaseModel: () => {
      open();
      return inference.whenReady();
    },
  };
}

describe('Kubernetes probes', () => {
  let h: HeldApp;
  beforeAll(async () => {
    h = await startHeldApp();
  });
  afterAll(() => h.app.close());

  it('while the model loads: live 200, startup and ready 503 with the reason, /health still 200 "loading"', async () => {
    expect(h.inference.state).toBe('loading');
    await request(h.url).get('/health/live').expect(200);
    const ready = await request(h.url).get('/health/ready').expect(503);
    expect(ready.headers['retry-after']).toBe('5');
    expect(ready.body.error).toMatchObject({
      type: 'service_unavailable_error',
      code: 'not_ready',
      message: 'Not ready: model: model is loading',
      details: [{ field: 'model', message: 'model is loading' }],
    });
    const startup = await request(h.url).get('/health/startup').expect(503);
    expect(startup.body.error.code).toBe('not_started');
    const seed = await request(h.url).get('/health').expect(200);
    expect(seed.body).toEqual({ status: 'loading', model_loaded: false, timestamp: expect.any(String) });
    expect(metric(await scrape(h.url), 'llm_model_ready')).toBe(0);
  });

  it('once loaded: startup, live and ready 200 with the checks', async () => {
    await h.releaseModel();
    const ready = await request(h.url).get('/health/ready').expect(200);
    expect(ready.body).toMatchObject({
      status: 'ok',
      info: { model: { status: 'up', state: 'ready', id: 'stories260K' }, scheduler: { status: 'up', state: 'admitting', slots: 1 } },
    });
    // no dependency configured: none checked
    expect(Object.keys(ready.body.info)).toEqual(['model', 'scheduler']);
    await request(h.url).get('/health/startup').expect(200);
    await request(h.url).get('/health/live').expect(200);
    expect((await request(h.url).get('/health').expect(200)).body).toMatchObject({ status: 'healthy', model_loaded: true });
    expect(metric(await scrape(h.url), 'llm_model_ready')).toBe(1);
  });

  it('while draining: ready 503 "draining", running generations finish, new ones are refused, live stays 200', async () => {
    const auth = { Authorization: `Bearer ${TEST_KEY}` };
    const running = request(h.url).post('/v1/generate').set(auth).send({ prompt: 'Once upon a time', max_tokens: 300, ignore_eos: true });
    const finished = running.then((res) => res);
    await waitFor(() => h.inference.scheduler.busySlots === 1, 10_000, 'generation started');
    const drained = h.inference.drain();
    expect(h.inference.draining).toBe(true);
    const ready = await request(h.url).get('/health/ready').expect(503);
    expect(ready.body.error.details).toEqual([{ field: 'scheduler', message: 'draining: not admitting new requests' }]);
    await request(h.url).get('/health/live').expect(200);
    await request(h.url).get('/health/startup').expect(200);
    expect(metric(await scrape(h.url), 'llm_scheduler_accepting')).toBe(0);
    const refused = await request(h.url).post('/v1/generate').set(auth).send({ prompt: 'Hi', max_tokens: 2 }).expect(503);
    expect(refused.body.error.code).toBe('shutting_down');
    const res = await finished;
    expect(res.status).toBe(200);
    expect(res.body.usage.completion_tokens).toBe(300);
    await drained;
    await request(h.url).get('/health/ready').expect(503);
  });
});

/** A private redis-server that the test can stop and start again on the same port. */
class OwnRedis {
  #child: ChildProcess | undefined;
  constructor(readonly port: number) {}

  async start(): Promise<void> {
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    this.#child = child;
    const probe = new RedisProbe(`redis://127.0.0.1:${this.port}`, 500);
    await waitFor(async () => (await probe.check()).up, 10_000, 'redis-server up');
    await probe.close();
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }
}

describe('readiness with Redis and PostgreSQL configured', () => {
  let h: HeldApp;
  let redis: OwnRedis;
  beforeAll(async () => {
    redis = new OwnRedis(await freePort());
    await redis.start();
    h = await startHeldApp({ REDIS_URL: `redis://127.0.0.1:${redis.port}`, DATABASE_URL: POSTGRES_URL, HEALTH_CHECK_TIMEOUT_MS: '500' });
    await h.releaseModel();
  });
  afterAll(async () => {
    await h.app.close();
    await redis.stop();
  });

  it('checks both and exports llm_dependency_up', async () => {
    const ready = await request(h.url).get('/health/ready').expect(200);
    expect(ready.body.info).toMatchObject({ redis: { status: 'up' }, database: { status: 'up' } });
    const s = await scrape(h.url);
    expect(metric(s, 'llm_dependency_up', { dependency: 'redis' })).toBe(1);
    expect(metric(s, 'llm_dependency_up', { dependency: 'database' })).toBe(1);
  });

  it('turns 503 when Redis goes down (liveness unaffected) and 200 when it is back', async () => {
    await redis.stop();
    const ready = await request(h.url).get('/health/ready').expect(503);
    expect(ready.body.error.details.map((d: { field: string }) => d.field)).toEqual(['redis']);
    await request(h.url).get('/health/live').expect(200);
    expect(metric(await scrape(h.url), 'llm_dependency_up', { dependency: 'redis' })).toBe(0);
    await redis.start();
    await waitFor(async () => (await fetch(`${h.url}/health/ready`)).status === 200, 15_000, 'ready again');
    expect(metric(await scrape(h.url), 'llm_dependency_up', { dependency: 'redis' })).toBe(1);
  });

  it('reports an unreachable database as down with the reason, without the URL credentials', async () => {
    const port = await freePort();
    const result = await new DatabaseProbe(`postgres://postgres:hunter2@127.0.0.1:${port}/test`, 500).check();
    expect(result.up).toBe(false);
    expect(result.error).toMatch(/ECONNREFUSED|connect/);
    expect(result.error).not.toContain('hunter2');
  });
});
