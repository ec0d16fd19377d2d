import { Inject, Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown, Optional } from '@nestjs/common';
import type { InferenceConfig } from './inference.config';
import { AppConfig } from '@app/common';
import type * as NodeLlamaCpp from 'node-llama-cpp';
import { SchedulerSnapshot, SlotState } from '@app/batching';
import type { RequestOutcome, SchedulerObserver } from '@app/batching';
import { RequestTelemetry } from '@app/observability';
import { InferenceErrorCode, InferenceException } from './inference.exception';
import { ChatMessage, EmbeddingResult, EmbeddingTokenizer, ModelDescriptor } from './inference.types';
import { ToolDefinition } from './tools/tool.types';
import { LlamaBackend, ResolvedBudget } from './registry/llama.backend';
import { LoadedModel } from './registry/loaded-model';
import { buildCatalog, CatalogContents } from './registry/model.catalog';
import { ModelHandle, PreparedPrompt } from './registry/model.handle';
import { ModelEntryView, ModelRegistry, RegistryEvent } from './registry/model.registry';
import { ModelKind } from './registry/model.types';

export type { CompletedGeneration, GenerationRequest, ModelHandle, PreparedPrompt, StopDetail, Usage } from './registry/model.handle';
export { toUsage } from './registry/model.handle';

/** The default model's state, as the probes and `/health` report it. */
export type ModelState = 'loading' | 'ready' | 'failed';

/**
 * Optional provider: metrics (and anything else) that want the scheduler's events register a
 * SchedulerObserver under this token. With `forModel`, each model's scheduler reports through
 * its own observer (metrics labelled by model).
 */
export const SCHEDULER_OBSERVER = Symbol('SCHEDULER_OBSERVER');

/** An observer that can label what it records by model. */
export interface ModelSchedulerObserver extends SchedulerObserver {
  forModel?(model: string): SchedulerObserver;
  /** The model is gone: drop its series. */
  modelUnloaded?(model: string): void;
}

/** Optional provider told about model loads and unloads (metrics). */
export const MODEL_EVENTS_OBSERVER = Symbol('MODEL_EVENTS_OBSERVER');
export interface ModelEventsObserver {
  onModelEvent(event: RegistryEvent): void;
}

/** How long a name that is not in the registry waits before MODELS_DIR is scanned again for it. */
const RESCAN_INTERVAL_MS = 1000;

/**
 * What the API layer calls. Serves every configured model (ModelRegistry): `acquire(name)`
 * resolves a request's model (id or alias), loads it on demand and holds it for the rest of the
 * request; the handle prepares prompts and generates on that model's own context and scheduler.
 *
 * The default model loads with the application, in the background so that the HTTP server (and
 * its probes) answer while it loads; `state`, `model`, `scheduler` and the prepare/generate
 * methods below are the default model's (the single-model API, and what readiness reports).
 */
@Injectable()
export class InferenceService implements OnApplicationBootstrap, OnApplicationShutdown {
  readonly #logger = new Logger('Inference');
  readonly #backend: LlamaBackend;
  readonly #registry: ModelRegistry<LoadedModel>;
  #catalog: CatalogContents;
  readonly #external: ModelSchedulerObserver;
  #generatedTokens = 0;
  #draining = false;
  #ready: Promise<ModelDescriptor> | null = null;
  #failure: Error | null = null;
  #lastRescan = 0;
  readonly #progressListeners = new Set<(fraction: number) => void>();

  constructor(
    @Inject(AppConfig) private readonly config: InferenceConfig,
    @Optional() @Inject(SCHEDULER_OBSERVER) observer?: ModelSchedulerObserver,
    @Optional() @Inject(MODEL_EVENTS_OBSERVER) private readonly events?: ModelEventsObserver,
  ) {
    this.#external = observer ?? {};
    this.#catalog = buildCatalog(config);
    for (const warning of this.#catalog.warnings) this.#logger.warn(warning);
    const defaultSpec = this.#catalog.specs.find((s) => s.id === this.#catalog.defaultId);
    this.#backend = new LlamaBackend(config.gpu, defaultSpec?.path ?? config.modelPath);
    const engine = {
      threadPoll: config.threadPoll,
      promptDrainPack: config.promptDrainPack,
      engineAddon: config.engineAddon,
      engineAddonPath: config.engineAddonPath,
      engineLoop: config.engineLoop,
      engineGapFill: config.engineGapFill,
      enginePromptAlone: config.enginePromptAlone,
      engineDecodeSplit: config.engineDecodeSplit,
      engineDecodePad: config.engineDecodePad,
      schemaLimits: config.schemaLimits,
    };
    const queue = { queueMax: config.queueMax, queueTimeoutMs: config.queueTimeoutMs, prefillChunk: config.prefillChunk, promptPackTokens: config.promptPackTokens, drainPack: config.promptDrainPack };
    this.#registry = new ModelRegistry<LoadedModel>(
      this.#catalog.specs,
      this.#catalog.defaultId,
      {
        create: (spec) => {
          const model = new LoadedModel(spec, engine, this.#backend, queue, this.#observerFor(spec.id));
          // Loaded during a drain (a request that was already routed): it admits nothing new either.
          if (this.#draining) model.stopAccepting();
          if (spec.id === this.#catalog.defaultId) for (const listener of this.#progressListeners) model.onLoadProgress(listener);
          return model;
        },
        estimate: (spec) => this.#backend.estimate(spec),
        budget: () => this.#backend.budget(config.modelMemoryBudget),
        onEvent: (event) => {
          if (event.type === 'unloaded') this.#external.modelUnloaded?.(event.id);
          this.events?.onModelEvent(event);
        },
      },
      { loadTimeoutMs: config.modelLoadTimeoutMs },
    );
  }

  onApplicationBootstrap(): void {
    // Start loading with the app; whoever needs the model awaits whenReady().
    this.whenReady().catch((err: Error) => this.#logger.error(`Model load failed: ${err.message}`));
    for (const spec of this.#catalog.specs) {
      if (spec.preload && spec.id !== this.#catalog.defaultId) {
        this.#registry.load(spec.id).catch((err: Error) => this.#logger.warn(`Preloading ${spec.id} failed: ${err.message}`));
      }
    }
  }

  /** Id of the model requests get when they name none. */
  get defaultModelId(): string {
    return this.#catalog.defaultId;
  }

  /** Id of the model embeddings use when none is named: the configured embedding model, else the default model. */
  get embeddingModelId(): string {
    return this.#catalog.embeddingId ?? this.#catalog.defaultId;
  }

  /** The default model's state (readiness follows it). */
  get state(): ModelState {
    const state = this.#registry.view(this.#catalog.defaultId).state;
    return state === 'loaded' ? 'ready' : state === 'failed' ? 'failed' : 'loading';
  }

  /** The default model's slots and queue. */
  get scheduler(): SchedulerSnapshot {
    return this.#default()?.scheduler ?? this.#placeholder();
  }

  /** Follows the default model's load (0..1), e.g. for a progress bar; returns a function that stops it. */
  onLoadProgress(listener: (fraction: number) => void): () => void {
    this.#progressListeners.add(listener);
    return () => this.#progressListeners.delete(listener);
  }

  /** Starts loading the default model (once) and resolves when it is ready; rejects with the load error. */
  whenReady(): Promise<ModelDescriptor> {
    this.#ready ??= this.#loadDefault().then(
      (model) => {
        if (this.#draining) model.stopAccepting();
        return model.descriptor;
      },
      (err: Error) => {
        this.#failure = err;
        throw err instanceof InferenceException && err.cause instanceof Error ? err.cause : err;
      },
    );
    return this.#ready;
  }

  /**
   * The default model, however long its first load takes: MODEL_LOAD_TIMEOUT_MS bounds how long a
   * request waits for a model, not the start-up load, which goes on past it (seen in CI: a 1 s
   * bound and a busy machine made the default model "fail" while it was still loading).
   */
  async #loadDefault(): Promise<LoadedModel> {
    const id = this.#catalog.defaultId;
    for (;;) {
      try {
        return await this.#registry.load(id);
      } catch (err) {
        // (Not while shutting down: the registry then refuses at once, and this would spin.)
        const stillLoading =
          !this.#draining && err instanceof InferenceException && err.code === InferenceErrorCode.ModelLoading && this.#registry.view(id).state === 'loading';
        if (!stillLoading) throw err;
      }
    }
  }

  /** The default model's descriptor. */
  get model(): ModelDescriptor {
    return this.#requireDefault().descriptor;
  }

  /**
   * The model a request names (id or alias; none = the default, or for `kind` embedding the
   * embedding model), or a 404 `model_not_found` / 400 `model_kind_mismatch`. Nothing is loaded.
   * A name not configured makes the registry look at MODELS_DIR again first (a model just
   * pulled is served without a restart).
   */
  resolve(name: string | undefined, kind?: ModelKind | readonly ModelKind[]): { id: string; aliases: readonly string[]; kind: ModelKind } {
    if (name !== undefined && name !== '' && !this.#registry.has(name) && this.config.modelsDir && Date.now() - this.#lastRescan > RESCAN_INTERVAL_MS) {
      this.refresh();
    }
    const wantsEmbedding = kind === 'embedding' || (Array.isArray(kind) && kind[0] === 'embedding');
    const fallback = (name === undefined || name === '') && wantsEmbedding ? this.embeddingModelId : name;
    const spec = this.#registry.resolve(fallback, kind);
    return { id: spec.id, aliases: spec.aliases, kind: spec.kind };
  }

  /**
   * The model for a request: resolved by name (see `resolve`), loaded if needed (the request
   * waits, at most MODEL_LOAD_TIMEOUT_MS; 503 with Retry-After when it fails or the memory
   * budget cannot make room) and held until the HTTP response ends, so that neither its
   * keep-alive nor the budget unloads it under the request. Sets the request's `model` (log
   * line, usage ledger).
   */
  async acquire(name: string | undefined, kind?: ModelKind | readonly ModelKind[]): Promise<ModelHandle> {
    const { id } = this.resolve(name, kind);
    const lease = await this.#registry.acquire(id);
    const telemetry = RequestTelemetry.current();
    if (telemetry) {
      // The request's model is the one its route chose; an embedding for the semantic cache or
      // retrieval on the way does not change what the request is accounted under.
      telemetry.model ??= id;
      telemetry.whenEnded(lease.release);
    } else {
      // Outside a request (CLI, tests): held for a moment only; the scheduler's own work keeps it loaded.
      setImmediate(lease.release);
    }
    return lease.model;
  }

  /** Every configured model with its state, memory estimate and use. */
  models(): ModelEntryView[] {
    return this.#registry.list();
  }

  /** One model's entry, by id. */
  entry(id: string): ModelEntryView {
    return this.#registry.view(id);
  }

  /** The memory budget resolved against this machine, and what the loaded models take. */
  async memory(): Promise<{ budget: ResolvedBudget; used: { ram: number; vram: number } }> {
    return { budget: await this.#backend.budget(this.config.modelMemoryBudget, false), used: this.#registry.used() };
  }

  /** Operator: loads a model (by id or alias) now; its keep-alive starts. */
  async load(name: string): Promise<ModelEntryView> {
    const { id } = this.resolve(name);
    await this.#registry.load(id);
    return this.#registry.view(id);
  }

  /** Operator: unloads a model once its in-flight requests are done. */
  async unload(name: string): Promise<ModelEntryView> {
    const { id } = this.resolve(name);
    await this.#registry.unload(id, 'admin');
    // Readiness reports the default model again once a request (or an operator) loads it.
    if (id === this.#catalog.defaultId) this.#ready = null;
    return this.#registry.view(id);
  }

  /** Reads the configuration again (MODELS_DIR's files): new models appear, removed ones go once idle. */
  refresh(): ModelEntryView[] {
    this.#lastRescan = Date.now();
    try {
      const next = buildCatalog(this.config);
      this.#catalog = { ...next, defaultId: this.#catalog.defaultId };
      this.#registry.replace(next.specs);
    } catch (err) {
      this.#logger.warn(`Model catalog refresh failed: ${(err as Error).message}`);
      throw new InferenceException(InferenceErrorCode.ModelLoadFailed, `Cannot read the model configuration: ${(err as Error).message}`);
    }
    return this.#registry.list();
  }

  // The default model's tokenizer and prompts, for callers that need no routing (tests, tools).
  prepareText(prompt: string, maxTokens: number | undefined, defaultMaxTokens: number | 'fill'): PreparedPrompt {
    return this.#requireDefault().prepareText(prompt, maxTokens, defaultMaxTokens);
  }

  prepareChat(messages: readonly ChatMessage[], maxTokens: number | undefined, tools: readonly ToolDefinition[] = []): PreparedPrompt {
    return this.#requireDefault().prepareChat(messages, maxTokens, tools);
  }

  detokenize(tokens: readonly number[], options: { readonly special?: boolean } = {}): string {
    return this.#requireDefault().detokenize(tokens, options);
  }

  /** Embeds with the embedding model (EMBEDDING_MODEL_PATH, or the models' first embedding model), else the default model. */
  async embed(texts: readonly (string | readonly number[])[]): Promise<EmbeddingResult> {
    return (await this.acquire(undefined, ['embedding', 'chat'])).embed(texts);
  }

  /** Tokenizer of the model that `embed` uses. */
  async embeddingTokenizer(): Promise<EmbeddingTokenizer> {
    return (await this.acquire(undefined, ['embedding', 'chat'])).embeddingTokenizer();
  }

  /** The file of the model `embed` uses (its fingerprint scopes the semantic cache). */
  get embeddingModelPath(): string {
    return this.#registry.view(this.embeddingModelId).spec.path;
  }

  /** The llama.cpp backend every model shares (started on first use), for models of their own (the reranker). */
  async llama(): Promise<NodeLlamaCpp.Llama> {
    return (await this.#backend.get()).llama;
  }

  /** Tokens generated since start on every model, aborted generations included. */
  get generatedTokens(): number {
    return this.#generatedTokens;
  }

  /** Tokens of `text` (no BOS); `special`: control-token texts such as `<s>` become those tokens. */
  tokenize(text: string, options: { readonly special?: boolean } = {}): number[] {
    return this.#requireDefault().tokenize(text, options);
  }

  /** Tokens held in the KV cache across the default model's slots (0 before it is loaded). */
  get kvCacheTokens(): number {
    return this.#default()?.scheduler.kvTokens ?? 0;
  }

  /** A loaded model's scheduler (null when it is not loaded). */
  schedulerOf(id: string): SchedulerSnapshot | null {
    return this.#registry.peek(id)?.scheduler ?? null;
  }

  /** True once drain() or shutdown stopped admitting work: readiness reports "draining". */
  get draining(): boolean {
    return this.#draining;
  }

  /** Stops admitting work on every model; resolves when running generations have finished. */
  async drain(): Promise<void> {
    this.#draining = true;
    const loaded = this.#loadedModels();
    for (const model of loaded) model.stopAccepting();
    await Promise.all(loaded.map((m) => m.whenIdle()));
  }

  async onApplicationShutdown(): Promise<void> {
    this.#draining = true;
    for (const model of this.#loadedModels()) model.stopAccepting();
    await this.#ready?.catch(() => undefined);
    // Freeing a native context under a decode in flight crashes the process (SIGSEGV); each
    // model waits (bounded) for its cancelled generations to leave the loop before it is freed.
    await this.#registry.dispose().catch((err: unknown) => this.#logger.warn(`dispose failed: ${String(err)}`));
    await this.#backend.dispose().catch((err: unknown) => this.#logger.warn(`backend dispose failed: ${String(err)}`));
  }

  #loadedModels(): LoadedModel[] {
    return this.#registry
      .list()
      .map((e) => this.#registry.peek(e.spec.id))
      .filter((m): m is LoadedModel => m !== null);
  }

  #default(): LoadedModel | null {
    return this.#registry.peek(this.#catalog.defaultId);
  }

  #requireDefault(): LoadedModel {
    const model = this.#default();
    if (model) return model;
    if (this.state === 'failed') {
      throw new InferenceException(InferenceErrorCode.ModelLoadFailed, `Model failed to load: ${this.#failure?.message ?? this.#registry.view(this.#catalog.defaultId).error}`);
    }
    throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading; retry shortly', { headers: { 'Retry-After': '2' } });
  }

  #placeholder(): SchedulerSnapshot {
    const spec = this.#registry.view(this.#catalog.defaultId).spec;
    return {
      slots: Array.from({ length: spec.slots }, () => SlotState.Idle),
      busySlots: 0,
      queueDepth: 0,
      queueCapacity: this.config.queueMax,
      accepting: false,
      kvTokens: 0,
    };
  }

  /** The scheduler observer of one model: the external one (labelled by model when it can) plus the token count. */
  #observerFor(id: string): SchedulerObserver {
    const external: SchedulerObserver = this.#external.forModel?.(id) ?? this.#external;
    // Bind explicitly: the observer is usually a class instance, whose hooks live on its prototype.
    const bound = (name: keyof SchedulerObserver) => (external[name] as ((...a: unknown[]) => void) | undefined)?.bind(external);
    return {
      onQueueWait: bound('onQueueWait'),
      onRejected: bound('onRejected'),
      onStateChange: bound('onStateChange'),
      onFirstToken: bound('onFirstToken'),
      onInterToken: bound('onInterToken'),
      onStep: bound('onStep'),
      onFinish: (outcome: RequestOutcome) => {
        this.#generatedTokens += outcome.completionTokens;
        external.onFinish?.call(external, outcome);
      },
    };
  }
}
