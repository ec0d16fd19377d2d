import { Logger } from '@nestjs/common';
import type { ModelDescriptor } from '../inference.types';
import { InferenceErrorCode } from '../inference.exception';
import { ResolvedBudget } from './llama.backend';
import { ManagedModel, ModelRegistry, RegistryEvent } from './model.registry';
import { MemoryFootprint, ModelSpec } from './model.types';

/**
 * The registry's policy against fake models (load, memory, busy are whatever the test says):
 * what it loads, holds, keeps, evicts and refuses. The e2e suite runs the same paths on real
 * GGUFs (test/models.e2e-spec.ts).
 */
class FakeModel implements ManagedModel {
  busy = false;
  loaded = false;
  disposed = false;
  constructor(
    readonly spec: ModelSpec,
    private readonly behaviour: { fail?: string; loadMs?: number },
  ) {}
  async load(): Promise<ModelDescriptor> {
    await new Promise((r) => setTimeout(r, this.behaviour.loadMs ?? 1));
    if (this.behaviour.fail) throw new Error(this.behaviour.fail);
    this.loaded = true;
    return { id: this.spec.id } as ModelDescriptor;
  }
  async dispose(): Promise<void> {
    this.disposed = true;
  }
}

const MB = 1024 * 1024;

function spec(id: string, over: Partial<ModelSpec> = {}): ModelSpec {
  return {
    id,
    aliases: [],
    path: `/models/${id}.gguf`,
    kind: 'chat',
    source: 'MODELS_DIR',
    contextSize: 512,
    slots: 2,
    batchSize: 512,
    threads: undefined,
    gpuLayers: undefined,
    flashAttention: 'auto',
    kvCacheTypeK: 'f16',
    kvCacheTypeV: 'f16',
    keepAliveMs: -1,
    preload: false,
    defaults: {},
    ...over,
  };
}

function setup(
  specs: ModelSpec[],
  opts: { budget?: ResolvedBudget; sizes?: Record<string, number>; fail?: Record<string, string>; loadTimeoutMs?: number; loadMs?: number } = {},
) {
  const made: FakeModel[] = [];
  const events: RegistryEvent[] = [];
  const registry = new ModelRegistry<FakeModel>(
    specs,
    specs[0].id,
    {
      create: (s) => {
        const m = new FakeModel(s, { fail: opts.fail?.[s.id], loadMs: opts.loadMs });
        made.push(m);
        return m;
      },
      estimate: async (s): Promise<MemoryFootprint> => {
        if (s.path.includes('missing')) throw new Error(`Model file not found: ${s.path}`);
        return { ram: (opts.sizes?.[s.id] ?? 10) * MB, vram: 0 };
      },
      budget: async () => opts.budget ?? { ram: null, vram: null },
      onEvent: (e) => events.push(e),
    },
    { loadTimeoutMs: opts.loadTimeoutMs ?? 2000 },
  );
  const state = (id: string): string => registry.view(id).state;
  return { registry, made, events, state };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(() => Logger.overrideLogger(false));

describe('ModelRegistry', () => {
  it('resolves ids and aliases (none = the default), 404 for others, 400 for the wrong kind', () => {
    const { registry } = setup([spec('main'), spec('small', { aliases: ['gpt-4o-mini'] }), spec('embed', { kind: 'embedding' })]);
    expect(registry.resolve(undefined).id).toBe('main');
    expect(registry.resolve('gpt-4o-mini').id).toBe('small');
    expect(() => registry.resolve('gpt-5')).toThrow(expect.objectContaining({ code: InferenceErrorCode.ModelNotFound }));
    expect(() => registry.resolve('embed', 'chat')).toThrow(expect.objectContaining({ code: InferenceErrorCode.ModelKindMismatch }));
    expect(registry.resolve('embed', ['embedding', 'chat']).id).toBe('embed');
  });

  it('loads on first use, once for concurrent requests, and reports states', async () => {
    const { registry, made, state, events } = setup([spec('main'), spec('b')], { loadMs: 30 });
    expect(state('b')).toBe('unloaded');
    const [l1, l2] = await Promise.all([registry.acquire('b'), registry.acquire('b'), sleep(5).then(() => expect(state('b')).toBe('loading'))]);
    expect(made.filter((m) => m.spec.id === 'b')).toHaveLength(1);
    expect(l1.model).toBe(l2.model);
    expect(state('b')).toBe('loaded');
    expect(registry.view('b')).toMatchObject({ inFlight: 2, memory: { ram: 10 * MB, vram: 0 } });
    l1.release();
    l1.release(); // twice is once
    expect(registry.view('b').inFlight).toBe(1);
    expect(events).toEqual([expect.objectContaining({ type: 'loaded', id: 'b' })]);
  });

  it('unloads a model its keep-alive after the last release, never while a request holds it or it generates', async () => {
    const { registry, state, events } = setup([spec('main'), spec('b', { keepAliveMs: 60 })]);
    const lease = await registry.acquire('b');
    await sleep(120);
    expect(state('b')).toBe('loaded'); // held
    lease.release();
    expect(registry.view('b').expiresAt).not.toBeNull();
    lease.model.busy = true; // a generation whose client left is still leaving the loop
    await sleep(120);
    expect(state('b')).toBe('loaded');
    lease.model.busy = false;
    await sleep(400);
    expect(state('b')).toBe('unloaded');
    expect(lease.model.disposed).toBe(true);
    expect(events.at(-1)).toEqual({ type: 'unloaded', id: 'b', reason: 'keep_alive' });
  });

  it('a new request before the keep-alive ends keeps the model and starts the wait over', async () => {
    const { registry, state } = setup([spec('main'), spec('b', { keepAliveMs: 150 })]);
    (await registry.acquire('b')).release();
    await sleep(100);
    (await registry.acquire('b')).release();
    await sleep(100);
    expect(state('b')).toBe('loaded');
    await sleep(120);
    expect(state('b')).toBe('unloaded');
  });

  it('makes room in the budget by unloading the least recently used idle model, not a held one, never the default', async () => {
    const { registry, state, events } = setup([spec('main'), spec('a'), spec('b'), spec('c')], { budget: { ram: 35 * MB, vram: null } });
    await registry.load('main');
    (await registry.acquire('a')).release();
    const b = await registry.acquire('b'); // held: an in-flight stream
    expect(registry.used().ram).toBe(30 * MB);
    (await registry.acquire('c')).release();
    expect(state('a')).toBe('unloaded'); // the least recently used idle one
    expect(state('b')).toBe('loaded');
    expect(state('main')).toBe('loaded');
    expect(b.model.disposed).toBe(false);
    expect(events).toContainEqual({ type: 'unloaded', id: 'a', reason: 'budget' });
    b.release();
  });

  it('waits (bounded) for a held model to be released when nothing else can go, then loads', async () => {
    const { registry, state } = setup([spec('main'), spec('a'), spec('b')], { budget: { ram: 25 * MB, vram: null } });
    await registry.load('main');
    const a = await registry.acquire('a');
    const loading = registry.acquire('b');
    await sleep(100);
    expect(state('b')).toBe('loading');
    expect(state('a')).toBe('loaded');
    a.release();
    const b = await loading;
    expect(state('a')).toBe('unloaded');
    expect(b.model.spec.id).toBe('b');
  });

  it('answers 503 with Retry-After when the budget cannot be met in time, and at once when the model can never fit', async () => {
    const { registry, state } = setup([spec('main'), spec('a'), spec('b'), spec('huge')], {
      budget: { ram: 25 * MB, vram: null },
      sizes: { huge: 100 },
      loadTimeoutMs: 300,
    });
    await registry.load('main');
    const a = await registry.acquire('a');
    await expect(registry.acquire('b')).rejects.toMatchObject({ code: InferenceErrorCode.ModelBudgetExceeded, headers: { 'Retry-After': '5' } });
    expect(state('b')).toBe('unloaded');
    const started = Date.now();
    const err = await registry.acquire('huge').catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(250);
    expect(err).toMatchObject({ code: InferenceErrorCode.ModelBudgetExceeded });
    expect((err as Error).message).toMatch(/needs 100\.0 MiB RAM \(estimate\) but MODEL_MEMORY_BUDGET allows 25\.0 MiB RAM/);
    expect(state('a')).toBe('loaded');
    a.release();
  });

  it('the default model loads whatever its size (MODEL_PATH alone works as before the budget)', async () => {
    const { registry, state } = setup([spec('main')], { budget: { ram: 1 * MB, vram: null }, sizes: { main: 50 } });
    await registry.load('main');
    expect(state('main')).toBe('loaded');
  });

  it('a file that cannot be loaded fails with its reason, is retried only after a pause, and others keep working', async () => {
    const { registry, state, events } = setup([spec('main'), spec('broken'), spec('gone', { path: '/models/missing.gguf' })], { fail: { broken: 'corrupt tensor data' } });
    await expect(registry.acquire('broken')).rejects.toMatchObject({ code: InferenceErrorCode.ModelLoadFailed, message: expect.stringContaining('corrupt tensor data') });
    expect(registry.view('broken')).toMatchObject({ state: 'failed', error: 'corrupt tensor data' });
    await expect(registry.acquire('broken')).rejects.toMatchObject({ code: InferenceErrorCode.ModelLoadFailed, headers: { 'Retry-After': expect.any(String) } });
    await expect(registry.acquire('gone')).rejects.toMatchObject({ message: 'Model gone failed to load: Model file not found: /models/missing.gguf' });
    expect(events.filter((e) => e.type === 'load_failed').map((e) => e.id)).toEqual(['broken', 'gone']);
    const main = await registry.acquire('main');
    expect(state('main')).toBe('loaded');
    main.release();
  });

  it('an operator unload waits for in-flight requests; requests meanwhile wait and load it again', async () => {
    const { registry, state, made } = setup([spec('main'), spec('b')]);
    const lease = await registry.acquire('b');
    const unloading = registry.unload('b');
    await sleep(50);
    expect(state('b')).toBe('unloading');
    expect(lease.model.disposed).toBe(false);
    const again = registry.acquire('b');
    lease.release();
    await unloading;
    expect(lease.model.disposed).toBe(true);
    const second = await again;
    expect(second.model).not.toBe(lease.model);
    expect(made.filter((m) => m.spec.id === 'b')).toHaveLength(2);
    second.release();
  });

  it('takes a new catalog: new models appear, removed idle ones go', async () => {
    const { registry } = setup([spec('main'), spec('old')]);
    (await registry.acquire('old')).release();
    registry.replace([spec('main'), spec('new', { aliases: ['n'] })]);
    expect(registry.resolve('n').id).toBe('new');
    await sleep(20);
    expect(() => registry.resolve('old')).toThrow(expect.objectContaining({ code: InferenceErrorCode.ModelNotFound }));
    expect(registry.list().map((m) => m.spec.id)).toEqual(['main', 'new']);
  });
});
