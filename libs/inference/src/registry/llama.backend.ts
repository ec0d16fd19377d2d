import { Logger } from '@nestjs/common';
import { existsSync, statSync } from 'node:fs';
import { totalmem } from 'node:os';
import type * as NodeLlamaCpp from 'node-llama-cpp';
import type { GpuChoice, KvCacheType, MemoryBudget } from '@app/common';
import { probeGpu, GpuProbeResult } from '../gpu.probe';
import { MemoryFootprint, ModelSpec } from './model.types';

type Lib = typeof NodeLlamaCpp;

/** The loaded llama.cpp backend every model of the process shares. */
export interface Backend {
  readonly lib: Lib;
  readonly llama: NodeLlamaCpp.Llama;
  readonly probe: GpuProbeResult;
}

/** Share of the machine an `auto` memory budget may give to models. */
export const AUTO_RAM_SHARE = 0.8;
export const AUTO_VRAM_SHARE = 0.9;

/** The memory budget in bytes; null = no limit on that memory. */
export interface ResolvedBudget {
  readonly ram: number | null;
  readonly vram: number | null;
}

/** Largest context a model's embedding or ranking context gets (llama.cpp processes one input per call). */
export const AUX_CONTEXT_MAX = 2048;

const KV_GGML: Record<KvCacheType, 'F16' | 'Q8_0' | 'Q4_0'> = { f16: 'F16', q8_0: 'Q8_0', q4_0: 'Q4_0' };

/** node-llama-cpp's name of a KV-cache type (experimentalKvCacheKeyType / ValueType). */
export function ggmlKvType(type: KvCacheType): 'F16' | 'Q8_0' | 'Q4_0' {
  return KV_GGML[type];
}

/**
 * One llama.cpp backend (node-llama-cpp's `Llama`) for every model: the GPU is probed once (in a
 * child process, with the default model), the library is imported once, and memory estimates
 * come from node-llama-cpp's own GGUF insights before a model is loaded.
 */
export class LlamaBackend {
  readonly #logger = new Logger('Inference');
  #backend: Promise<Backend> | null = null;
  /** The backend once started (for answers that must not wait for it). */
  #started: Backend | null = null;
  readonly #insights = new Map<string, Promise<NodeLlamaCpp.GgufInsights>>();

  constructor(
    private readonly gpu: GpuChoice,
    /** A model the GPU probe loads (one layer offloaded, one token decoded). */
    private readonly probeModelPath: string,
  ) {}

  get(): Promise<Backend> {
    this.#backend ??= this.#start();
    // A failed start (the library cannot load) is retried by the next model load.
    this.#backend.catch(() => (this.#backend = null));
    return this.#backend;
  }

  /** The backend when it has started, else null (no start). */
  async peek(): Promise<Backend | null> {
    return this.#backend ? this.#backend.catch(() => null) : null;
  }

  async #start(): Promise<Backend> {
    const probe = await probeGpu(this.gpu, this.probeModelPath);
    if (probe.fallbackReason) {
      // The usual cause on NVIDIA: node-llama-cpp's prebuilt backend needs a CUDA 13.1 driver.
      const fix = /cuda|auto/.test(this.gpu)
        ? '. If the GPU is NVIDIA and the prebuilt CUDA backend cannot run on this driver, build one for this machine: `npm run cli -- gpu build` (README, "GPU")'
        : '';
      this.#logger.warn(`${probe.fallbackReason}; falling back to CPU${fix}`);
    }
    const lib = await import('node-llama-cpp');
    const llama = await lib.getLlama({ gpu: probe.gpu, build: 'never', logLevel: lib.LlamaLogLevel.error, progressLogs: false });
    this.#started = { lib, llama, probe };
    return this.#started;
  }

  /**
   * The budget with `auto` sides resolved against this machine (80% of RAM, 90% of VRAM). With
   * `wait` false (metrics), an automatic VRAM budget is unknown (null) until the backend has started.
   */
  async budget(configured: MemoryBudget, wait = true): Promise<ResolvedBudget> {
    const ram = configured.ram === 'auto' ? Math.floor(totalmem() * AUTO_RAM_SHARE) : configured.ram;
    let vram: number | null = null;
    if (configured.vram !== 'auto') vram = configured.vram;
    else {
      const backend = wait ? await this.get() : this.#started;
      if (backend?.llama.gpu) vram = Math.floor((await backend.llama.getVramState()).total * AUTO_VRAM_SHARE);
    }
    return { ram, vram };
  }

  /**
   * What loading `spec` will take: its weights (at the GPU layers it will get) and its context
   * (slots x context size, batch, flash attention, KV-cache types) for a chat model, its
   * embedding or ranking context otherwise. node-llama-cpp's estimate, read from the GGUF header.
   */
  async estimate(spec: ModelSpec): Promise<MemoryFootprint> {
    if (!existsSync(spec.path) || !statSync(spec.path).isFile()) {
      throw new Error(`Model file not found: ${spec.path}${spec.source === 'MODEL_PATH' ? ' (set MODEL_PATH to a GGUF file)' : ''}`);
    }
    const { lib, probe } = await this.get();
    let insights: NodeLlamaCpp.GgufInsights;
    try {
      insights = await this.#insightsOf(spec.path);
    } catch (err) {
      // The file exists but its GGUF header cannot be read: truncated, corrupt, not a GGUF.
      throw new Error(`Cannot load model ${spec.path}: ${(err as Error).message.split('\n')[0]}`);
    }
    const layers = probe.gpu ? (spec.gpuLayers ?? insights.totalLayers) : 0;
    const weights = await insights.estimateModelResourceRequirementsV2({ gpuLayers: layers });
    const train = insights.trainContextSize ?? 4096;
    const chat = spec.kind === 'chat';
    const context = await insights.estimateContextResourceRequirementsV2({
      contextSize: chat ? (spec.contextSize ?? Math.min(train, 4096)) : Math.min(train, AUX_CONTEXT_MAX),
      modelGpuLayers: layers,
      batchSize: spec.batchSize,
      sequences: chat ? spec.slots : 1,
      isEmbeddingContext: !chat,
      flashAttention: spec.flashAttention === 'auto' ? 'auto' : spec.flashAttention === 'on',
      kvCacheKeyType: lib.GgmlType[ggmlKvType(spec.kvCacheTypeK)],
      kvCacheValueType: lib.GgmlType[ggmlKvType(spec.kvCacheTypeV)],
    });
    return { ram: Math.ceil(weights.cpuRam + context.cpuRam), vram: Math.ceil(weights.gpuVram + context.gpuVram) };
  }

  /** GGUF insights, cached per file version (size and mtime). */
  #insightsOf(path: string): Promise<NodeLlamaCpp.GgufInsights> {
    const st = statSync(path);
    const key = `${path}\u0000${st.size}\u0000${st.mtimeMs}`;
    let found = this.#insights.get(key);
    if (!found) {
      found = (async () => {
        const { lib, llama } = await this.get();
        const info = await lib.readGgufFileInfo(path, { logWarnings: false, ignoreKeys: ['tokenizer.ggml.tokens', 'tokenizer.ggml.merges', 'tokenizer.ggml.token_type', 'tokenizer.ggml.scores'] });
        return lib.GgufInsights.from(info, llama);
      })();
      found.catch(() => this.#insights.delete(key));
      this.#insights.set(key, found);
    }
    return found;
  }

  async dispose(): Promise<void> {
    const backend = await this.peek();
    this.#backend = null;
    this.#started = null;
    this.#insights.clear();
    await backend?.llama.dispose();
  }
}
