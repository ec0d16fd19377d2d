import type { ModelDescriptor, ModelEntryView, ResolvedBudget } from '@app/inference';

/** A model as the admin API and `model list --json` show it (snake_case, times as ISO strings). */
export function adminModelJson(m: ModelEntryView): Record<string, unknown> {
  const s = m.spec;
  const d = m.descriptor;
  return {
    id: s.id,
    aliases: s.aliases,
    kind: s.kind,
    path: s.path,
    source: s.source,
    state: m.state,
    default: m.isDefault,
    error: m.error,
    memory: m.memory,
    in_flight: m.inFlight,
    busy: m.busy,
    last_used_at: m.lastUsedAt === null ? null : new Date(m.lastUsedAt).toISOString(),
    unload_at: m.expiresAt === null ? null : new Date(m.expiresAt).toISOString(),
    keep_alive_seconds: s.keepAliveMs < 0 ? null : s.keepAliveMs / 1000,
    settings: {
      context_size: s.contextSize ?? null,
      slots: s.slots,
      batch_size: s.batchSize,
      threads: s.threads ?? null,
      gpu_layers: s.gpuLayers ?? 'auto',
      flash_attention: s.flashAttention,
      kv_cache_type_k: s.kvCacheTypeK,
      kv_cache_type_v: s.kvCacheTypeV,
      preload: s.preload,
      defaults: s.defaults,
    },
    loaded: d ? { ...loadedModelJson(d), threads: d.threads, engine: d.engine } : null,
  };
}

/** What a loaded model is (its descriptor), as the admin API and the status page show it. */
export function loadedModelJson(d: ModelDescriptor): Record<string, unknown> {
  return {
    architecture: d.architecture,
    parameters: d.parameters,
    size_bytes: d.sizeBytes,
    context_size: d.contextSize,
    train_context_size: d.trainContextSize,
    slots: d.slots,
    backend: d.gpu || 'cpu',
    gpu_layers: d.gpuLayers,
    chat_template: d.chatTemplate,
    load_ms: d.loadMs,
  };
}

export function budgetJson(memory: { budget: ResolvedBudget; used: { ram: number; vram: number } }): Record<string, unknown> {
  return { budget: memory.budget, used: memory.used };
}
