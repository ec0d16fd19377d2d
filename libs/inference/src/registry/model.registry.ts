import { Logger } from '@nestjs/common';
import { InferenceErrorCode, InferenceException } from '../inference.exception';
import type { ModelDescriptor } from '../inference.types';
import type { ResolvedBudget } from './llama.backend';
import { MemoryFootprint, ModelKind, ModelLoadState, ModelSpec } from './model.types';

/** What the registry needs of a model it manages (LoadedModel; fakes in unit tests). */
export interface ManagedModel {
  load(): Promise<ModelDescriptor>;
  /** Generations running or queued on it. */
  readonly busy: boolean;
  /** Frees it; called once it is idle. */
  dispose(): Promise<void>;
}

/** How the registry makes, measures and budgets models; the real ones are LlamaBackend's and LoadedModel. */
export interface RegistryDeps<M extends ManagedModel> {
  create(spec: ModelSpec): M;
  /** Memory the model will take once loaded (node-llama-cpp's estimate); rejects for an unreadable file. */
  estimate(spec: ModelSpec): Promise<MemoryFootprint>;
  budget(): Promise<ResolvedBudget>;
  /** Clock (ms); tests pass their own. */
  now?(): number;
  /** Load finished (ok or failed) or unload done: for metrics and logs. */
  onEvent?(event: RegistryEvent): void;
}

export type UnloadReason = 'keep_alive' | 'budget' | 'admin' | 'removed' | 'shutdown';
export type RegistryEvent =
  | { readonly type: 'loaded'; readonly id: string; readonly ms: number }
  | { readonly type: 'load_failed'; readonly id: string; readonly ms: number; readonly error: string }
  | { readonly type: 'unloaded'; readonly id: string; readonly reason: UnloadReason };

/** One entry as `/v1/models`, the admin API and `model list` show it. */
export interface ModelEntryView {
  readonly spec: ModelSpec;
  readonly state: ModelLoadState;
  readonly isDefault: boolean;
  /** Why the last load failed (state `failed`). */
  readonly error: string | null;
  /** Estimated memory while loading or loaded; null otherwise. */
  readonly memory: MemoryFootprint | null;
  /** Requests holding the model now. */
  readonly inFlight: number;
  readonly busy: boolean;
  /** Epoch ms of the last request (or load); null = never used. */
  readonly lastUsedAt: number | null;
  /** Epoch ms when it will be unloaded if no request comes; null = not scheduled. */
  readonly expiresAt: number | null;
  readonly descriptor: ModelDescriptor | null;
}

/** A model held by a request: the registry does not unload it until `release()`. */
export interface ModelLease<M> {
  readonly model: M;
  release(): void;
}

/** How long a failed load is remembered before a request may try again. */
export const FAILED_RETRY_MS = 10_000;

class Entry<M extends ManagedModel> {
  state: ModelLoadState = 'unloaded';
  model: M | null = null;
  descriptor: ModelDescriptor | null = null;
  loading: Promise<M> | null = null;
  unloading: Promise<void> | null = null;
  footprint: MemoryFootprint | null = null;
  pins = 0;
  lastUsed: number | null = null;
  error: string | null = null;
  failedAt = 0;
  timer: NodeJS.Timeout | undefined;
  expiresAt: number | null = null;
  /** Gone from the catalog (file removed): dropped once unloaded. */
  removed = false;
  constructor(public spec: ModelSpec) {}
}

/**
 * The models of one server and their lifecycle: resolve a request's name (id or alias), load on
 * demand, hold while requests use them, unload after their keep-alive, and keep the loaded ones
 * within the memory budget by unloading the least recently used idle models first. A model that
 * a request holds, or whose scheduler has work, is never unloaded; the default model is never
 * unloaded automatically (only by an operator). Loads that need room wait (bounded) for a model
 * to become idle; when the budget cannot be met they fail with 503 `model_budget_exceeded`.
 */
export class ModelRegistry<M extends ManagedModel> {
  readonly #logger = new Logger('Models');
  readonly #entries = new Map<string, Entry<M>>();
  /** Name (id or alias) → id. */
  readonly #names = new Map<string, string>();
  /** Loads reserve memory one at a time, so two loads never both count on the same free room. */
  #roomLock: Promise<unknown> = Promise.resolve();
  /** Woken when a model is released, becomes idle or is unloaded (waiters re-check the budget). */
  #changed: (() => void)[] = [];
  #closed = false;

  constructor(
    specs: readonly ModelSpec[],
    readonly defaultId: string,
    private readonly deps: RegistryDeps<M>,
    private readonly options: { readonly loadTimeoutMs: number },
  ) {
    this.replace(specs);
  }

  #now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /**
   * Takes a new catalog (a MODELS_DIR rescan): new entries appear, changed settings apply at the
   * next load, entries no longer configured are unloaded (once idle) and dropped.
   */
  replace(specs: readonly ModelSpec[]): void {
    const seen = new Set<string>();
    for (const spec of specs) {
      seen.add(spec.id);
      const entry = this.#entries.get(spec.id);
      if (entry) {
        entry.spec = spec;
        entry.removed = false;
      } else this.#entries.set(spec.id, new Entry<M>(spec));
    }
    for (const [id, entry] of this.#entries) {
      if (seen.has(id) || id === this.defaultId) continue;
      entry.removed = true;
      if (entry.state === 'unloaded' || entry.state === 'failed') this.#entries.delete(id);
      else if (entry.state === 'loaded') void this.unload(id, 'removed').catch(() => undefined);
    }
    this.#names.clear();
    for (const entry of this.#entries.values()) {
      for (const name of [entry.spec.id, ...entry.spec.aliases]) this.#names.set(name, entry.spec.id);
    }
    // A model's file name works too (`stories260K.gguf`), as it did with one model, unless it names another.
    for (const entry of this.#entries.values()) {
      const file = entry.spec.path.split('/').pop() as string;
      if (!this.#names.has(file)) this.#names.set(file, entry.spec.id);
    }
  }

  /** The entry a request's `model` names (id or alias; none = the default), or a 404 / 400. */
  resolve(name: string | undefined, kind?: ModelKind | readonly ModelKind[]): ModelSpec {
    const id = name === undefined || name === '' ? this.defaultId : this.#names.get(name);
    const entry = id === undefined ? undefined : this.#entries.get(id);
    if (!entry || entry.removed) {
      throw new InferenceException(InferenceErrorCode.ModelNotFound, `The model '${name}' does not exist; GET /v1/models lists the models of this server`, { param: 'model' });
    }
    const kinds = kind === undefined ? undefined : typeof kind === 'string' ? [kind] : kind;
    if (kinds && !kinds.includes(entry.spec.kind)) {
      throw new InferenceException(
        InferenceErrorCode.ModelKindMismatch,
        `The model '${name ?? entry.spec.id}' is a${entry.spec.kind === 'embedding' ? 'n' : ''} ${entry.spec.kind} model; this endpoint needs a ${kinds.join(' or ')} model`,
        { param: 'model' },
      );
    }
    return entry.spec;
  }

  /** Whether `name` names a model (id or alias). */
  has(name: string): boolean {
    const id = this.#names.get(name);
    return id !== undefined && !this.#entries.get(id)?.removed;
  }

  list(): ModelEntryView[] {
    return [...this.#entries.values()].filter((e) => !e.removed || e.state !== 'unloaded').map((e) => this.#view(e));
  }

  view(id: string): ModelEntryView {
    return this.#view(this.#entry(id));
  }

  /** The loaded model, or null (no load started). */
  peek(id: string): M | null {
    const e = this.#entries.get(id);
    return e?.state === 'loaded' ? e.model : null;
  }

  /**
   * Loads `id` if needed (waiting at most MODEL_LOAD_TIMEOUT_MS, room in the budget included)
   * and holds it until the lease is released.
   */
  async acquire(id: string): Promise<ModelLease<M>> {
    const entry = this.#entry(id);
    let model = await this.#ensureLoaded(entry);
    // An unload may have begun while this request resumed: take it only while it is still loaded.
    while (entry.state !== 'loaded' || entry.model !== model) model = await this.#ensureLoaded(entry);
    entry.pins++;
    entry.lastUsed = this.#now();
    this.#clearTimer(entry);
    let released = false;
    return {
      model,
      release: () => {
        if (released) return;
        released = true;
        entry.pins--;
        entry.lastUsed = this.#now();
        this.#schedule(entry);
        this.#notify();
      },
    };
  }

  /** Loads `id` (operator or preload) without holding it: its keep-alive starts now. */
  async load(id: string): Promise<M> {
    const entry = this.#entry(id);
    if (entry.state === 'failed') entry.failedAt = 0; // an explicit load retries at once
    const model = await this.#ensureLoaded(entry);
    entry.lastUsed = this.#now();
    this.#schedule(entry);
    return model;
  }

  /**
   * Unloads `id` once no request holds it and its scheduler is idle (in-flight requests are
   * never cut; new requests wait for the unload and load it again). Resolves when it is freed.
   */
  async unload(id: string, reason: UnloadReason = 'admin'): Promise<void> {
    const entry = this.#entry(id);
    if (entry.state === 'loading') await entry.loading?.catch(() => undefined);
    if (entry.state === 'unloading') return entry.unloading ?? undefined;
    if (entry.state !== 'loaded' || !entry.model) {
      if (entry.state === 'failed') {
        entry.state = 'unloaded';
        entry.error = null;
      }
      return;
    }
    const model = entry.model;
    entry.state = 'unloading';
    this.#clearTimer(entry);
    entry.unloading = (async () => {
      while (entry.pins > 0 || model.busy) await this.#waitForChange(1000);
      await model.dispose();
      entry.model = null;
      entry.descriptor = null;
      entry.footprint = null;
      entry.state = 'unloaded';
      entry.unloading = null;
      this.#logger.log(`Unloaded model ${entry.spec.id} (${reasonText(reason)})`);
      this.deps.onEvent?.({ type: 'unloaded', id: entry.spec.id, reason });
      if (entry.removed) this.#entries.delete(entry.spec.id);
      this.#notify();
    })();
    return entry.unloading;
  }

  /** Shutdown: every model freed (the caller has drained the schedulers first). */
  async dispose(): Promise<void> {
    this.#closed = true;
    for (const entry of this.#entries.values()) this.#clearTimer(entry);
    this.#notify();
    await Promise.all(
      [...this.#entries.values()].map(async (entry) => {
        await entry.loading?.catch(() => undefined);
        await entry.unloading?.catch(() => undefined);
        const model = entry.model;
        entry.model = null;
        entry.state = 'unloaded';
        await model?.dispose();
      }),
    );
  }

  /** Memory the loaded (and loading, and unloading) models take, by the estimates. */
  used(): MemoryFootprint {
    let ram = 0;
    let vram = 0;
    for (const e of this.#entries.values()) {
      if (e.footprint) {
        ram += e.footprint.ram;
        vram += e.footprint.vram;
      }
    }
    return { ram, vram };
  }

  async #ensureLoaded(entry: Entry<M>): Promise<M> {
    const deadline = this.#now() + this.options.loadTimeoutMs;
    for (;;) {
      if (this.#closed) throw new InferenceException(InferenceErrorCode.ModelLoading, 'The server is shutting down', { headers: { 'Retry-After': '5' } });
      if (entry.state === 'loaded' && entry.model) return entry.model;
      if (entry.state === 'loading' && entry.loading) return this.#bounded(entry.loading, deadline, entry.spec.id);
      if (entry.state === 'unloading' && entry.unloading) {
        await entry.unloading;
        continue;
      }
      if (entry.state === 'failed' && this.#now() - entry.failedAt < FAILED_RETRY_MS) {
        throw new InferenceException(InferenceErrorCode.ModelLoadFailed, `Model ${entry.spec.id} failed to load: ${entry.error}`, {
          headers: { 'Retry-After': String(Math.max(1, Math.ceil((FAILED_RETRY_MS - (this.#now() - entry.failedAt)) / 1000))) },
        });
      }
      entry.state = 'loading';
      entry.error = null;
      entry.loading = this.#load(entry, deadline);
      // Observed here so that a failure nobody awaits (an operator's load) is not unhandled.
      entry.loading.catch(() => undefined);
    }
  }

  async #load(entry: Entry<M>, deadline: number): Promise<M> {
    const started = this.#now();
    let model: M | null = null;
    try {
      // Reads the GGUF header: a missing or corrupt file fails here, before anything is loaded.
      const footprint = await this.deps.estimate(entry.spec);
      // The room wait ends a moment before the request's own wait, so that its 503 says why.
      await this.#reserve(entry, footprint, deadline - 250);
      model = this.deps.create(entry.spec);
      entry.descriptor = await model.load();
      entry.model = model;
      entry.state = 'loaded';
      entry.lastUsed ??= this.#now();
      this.deps.onEvent?.({ type: 'loaded', id: entry.spec.id, ms: this.#now() - started });
      this.#schedule(entry);
      return model;
    } catch (err) {
      entry.footprint = null;
      entry.model = null;
      entry.descriptor = null;
      const budget = err instanceof InferenceException && err.code === InferenceErrorCode.ModelBudgetExceeded;
      // A budget refusal is no fault of the model: the next request may find room.
      entry.state = budget ? 'unloaded' : 'failed';
      entry.error = budget ? null : (err as Error).message;
      entry.failedAt = this.#now();
      if (!budget) {
        this.#logger.error(`Model ${entry.spec.id} failed to load: ${(err as Error).message}`);
        this.deps.onEvent?.({ type: 'load_failed', id: entry.spec.id, ms: this.#now() - started, error: (err as Error).message });
      }
      this.#notify();
      if (err instanceof InferenceException) throw err;
      throw new InferenceException(InferenceErrorCode.ModelLoadFailed, `Model ${entry.spec.id} failed to load: ${(err as Error).message}`, {
        headers: { 'Retry-After': String(FAILED_RETRY_MS / 1000) },
        cause: err,
      });
    } finally {
      entry.loading = null;
    }
  }

  /**
   * Reserves the model's estimated memory, unloading the least recently used idle models while
   * it does not fit. The default model's first load is exempt (MODEL_PATH alone starts whatever
   * its size, as before there was a budget).
   */
  #reserve(entry: Entry<M>, need: MemoryFootprint, deadline: number): Promise<void> {
    const run = async (): Promise<void> => {
      const budget = await this.deps.budget();
      const exempt = entry.spec.id === this.defaultId;
      const fits = (): boolean => exempt || withinBudget(this.used(), need, budget);
      const pinned = (): MemoryFootprint => sum([...this.#entries.values()].filter((e) => e !== entry && e.spec.id === this.defaultId && e.footprint).map((e) => e.footprint as MemoryFootprint));
      if (!exempt && !withinBudget(pinned(), need, budget)) {
        throw new InferenceException(
          InferenceErrorCode.ModelBudgetExceeded,
          `Model ${entry.spec.id} needs ${formatFootprint(need)} (estimate) but MODEL_MEMORY_BUDGET allows ${formatBudget(budget)}` +
            ` of which the default model takes ${formatFootprint(pinned())}`,
        );
      }
      while (!fits()) {
        const victim = this.#evictable(entry);
        if (victim) {
          this.#logger.log(`Unloading model ${victim.spec.id} to make room for ${entry.spec.id} (memory budget)`);
          await this.unload(victim.spec.id, 'budget');
          continue;
        }
        const left = deadline - this.#now();
        if (left <= 0 || this.#closed) {
          const busy = [...this.#entries.values()].filter((e) => e !== entry && e.footprint).map((e) => e.spec.id);
          throw new InferenceException(
            InferenceErrorCode.ModelBudgetExceeded,
            `Model ${entry.spec.id} needs ${formatFootprint(need)} (estimate); the memory budget (${formatBudget(budget)}) is taken by models in use (${busy.join(', ')}); retry shortly`,
            { headers: { 'Retry-After': '5' } },
          );
        }
        await this.#waitForChange(Math.min(left, 1000));
      }
      entry.footprint = need;
      if (exempt && !withinBudget({ ram: 0, vram: 0 }, need, budget)) {
        this.#logger.warn(`The default model ${entry.spec.id} needs ${formatFootprint(need)} (estimate), more than MODEL_MEMORY_BUDGET (${formatBudget(budget)}); loading it anyway`);
      }
    };
    const done = this.#roomLock.then(run, run);
    this.#roomLock = done.catch(() => undefined);
    return done;
  }

  /** The least recently used loaded model that no request holds and whose scheduler is idle. */
  #evictable(except: Entry<M>): Entry<M> | null {
    let best: Entry<M> | null = null;
    for (const e of this.#entries.values()) {
      if (e === except || e.state !== 'loaded' || !e.model || e.spec.id === this.defaultId || e.pins > 0 || e.model.busy) continue;
      if (!best || (e.lastUsed ?? 0) < (best.lastUsed ?? 0)) best = e;
    }
    return best;
  }

  /** Arms the keep-alive: unloaded `keepAliveMs` after the last use once nothing holds it. */
  #schedule(entry: Entry<M>): void {
    this.#clearTimer(entry);
    const keep = entry.spec.keepAliveMs;
    if (keep < 0 || entry.state !== 'loaded' || entry.pins > 0 || this.#closed) return;
    const due = (entry.lastUsed ?? this.#now()) + keep;
    entry.expiresAt = due;
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      if (entry.state !== 'loaded' || entry.pins > 0) return;
      // Still generating (a request whose client left is cancelled within a step): look again soon.
      if (entry.model?.busy) {
        entry.timer = setTimeout(() => this.#schedule(entry), 250);
        entry.timer.unref();
        return;
      }
      entry.expiresAt = null;
      void this.unload(entry.spec.id, 'keep_alive').catch((err: unknown) => this.#logger.warn(`keep-alive unload of ${entry.spec.id} failed: ${String(err)}`));
    }, Math.max(0, due - this.#now()));
    entry.timer.unref();
  }

  #clearTimer(entry: Entry<M>): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    entry.expiresAt = null;
  }

  /** Tells waiters that a model was released, went idle or was unloaded. */
  #notify(): void {
    const waiters = this.#changed;
    this.#changed = [];
    for (const wake of waiters) wake();
  }

  /** Scheduler idleness is not an event here: waiters also wake up every `ms`. */
  #waitForChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#changed.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  async #bounded(loading: Promise<M>, deadline: number, id: string): Promise<M> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new InferenceException(InferenceErrorCode.ModelLoading, `Model ${id} is still loading; retry shortly`, { headers: { 'Retry-After': '5' } })),
        Math.max(0, deadline - this.#now()),
      );
    });
    try {
      return await Promise.race([loading, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  #entry(id: string): Entry<M> {
    const entry = this.#entries.get(id);
    if (!entry) throw new InferenceException(InferenceErrorCode.ModelNotFound, `The model '${id}' does not exist`, { param: 'model' });
    return entry;
  }

  #view(e: Entry<M>): ModelEntryView {
    return {
      spec: e.spec,
      state: e.state,
      isDefault: e.spec.id === this.defaultId,
      error: e.error,
      memory: e.footprint,
      inFlight: e.pins,
      busy: e.model?.busy ?? false,
      lastUsedAt: e.lastUsed,
      expiresAt: e.expiresAt,
      descriptor: e.state === 'loaded' ? e.descriptor : null,
    };
  }
}

function sum(items: readonly MemoryFootprint[]): MemoryFootprint {
  return items.reduce((a, b) => ({ ram: a.ram + b.ram, vram: a.vram + b.vram }), { ram: 0, vram: 0 });
}

/** Whether `need` fits beside `used`; a null side of the budget is no limit. */
export function withinBudget(used: MemoryFootprint, need: MemoryFootprint, budget: ResolvedBudget): boolean {
  return (budget.ram === null || used.ram + need.ram <= budget.ram) && (budget.vram === null || used.vram + need.vram <= budget.vram);
}

function mb(bytes: number): string {
  return bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(2)} GiB` : `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

export function formatFootprint(f: MemoryFootprint): string {
  return f.vram > 0 ? `${mb(f.ram)} RAM + ${mb(f.vram)} VRAM` : `${mb(f.ram)} RAM`;
}

function formatBudget(b: ResolvedBudget): string {
  return `${b.ram === null ? 'unlimited' : mb(b.ram)} RAM, ${b.vram === null ? 'unlimited' : mb(b.vram)} VRAM`;
}

function reasonText(reason: UnloadReason): string {
  return { keep_alive: 'idle past its keep-alive', budget: 'memory budget', admin: 'operator request', removed: 'no longer configured', shutdown: 'shutdown' }[reason];
}
