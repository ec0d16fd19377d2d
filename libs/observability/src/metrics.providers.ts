import { makeCounterProvider, makeGaugeProvider, makeHistogramProvider } from '@willsoto/nestjs-prometheus';
import { flushBuffersOf } from './histogram.buffer';

/**
 * Every series the platform exports. The first five are the design document's names (chapter
 * 23.3.1) and must not change: dashboards and alerts in deploy/ are written against them.
 */
export const METRIC = {
  requests: 'llm_requests_total',
  requestDuration: 'llm_request_duration_seconds',
  tokensGenerated: 'llm_tokens_generated_total',
  activeRequests: 'llm_active_requests',
  gpuUtilization: 'gpu_utilization_percent',

  timeToFirstToken: 'llm_time_to_first_token_seconds',
  interTokenLatency: 'llm_inter_token_latency_seconds',
  batchStep: 'llm_batch_step_seconds',
  batchTokens: 'llm_batch_tokens',
  batchHostOverhead: 'llm_batch_host_overhead_seconds',
  batchCompute: 'llm_batch_compute_seconds',
  batchThreads: 'llm_batch_threads',
  batchFilledTokens: 'llm_batch_filled_tokens_total',
  eventLoopCpu: 'llm_event_loop_cpu_seconds_total',
  queueWait: 'llm_queue_wait_seconds',
  promptTokens: 'llm_prompt_tokens_total',
  promptTokensCached: 'llm_prompt_tokens_cached_total',
  generations: 'llm_generations_total',
  aborted: 'llm_requests_aborted_total',
  schedulerRejections: 'llm_scheduler_rejections_total',
  queueDepth: 'llm_queue_depth',
  queueCapacity: 'llm_queue_capacity',
  slotsBusy: 'llm_slots_busy',
  slotsTotal: 'llm_slots_total',
  schedulerAccepting: 'llm_scheduler_accepting',
  kvCacheTokens: 'llm_kv_cache_tokens',
  kvCacheCapacity: 'llm_kv_cache_capacity_tokens',
  modelReady: 'llm_model_ready',
  modelInfo: 'llm_model_info',
  cacheLookups: 'llm_cache_lookups_total',
  rateLimited: 'llm_rate_limited_total',
  dependencyUp: 'llm_dependency_up',
  gpuAvailable: 'gpu_available',
  gpuMemoryUsed: 'gpu_memory_used_bytes',
  gpuMemoryTotal: 'gpu_memory_total_bytes',
  budgetExceeded: 'llm_budget_exceeded_total',
  usageFlushDuration: 'llm_usage_flush_duration_seconds',
  usageFlushLag: 'llm_usage_flush_lag_seconds',
  usageFlushFailures: 'llm_usage_flush_failures_total',
  usageDropped: 'llm_usage_dropped_total',
  usageBuffered: 'llm_usage_buffered_buckets',
  modelState: 'llm_model_state',
  modelMemory: 'llm_model_memory_bytes',
  modelMemoryBudget: 'llm_model_memory_budget_bytes',
  modelLoads: 'llm_model_loads_total',
  modelLoadDuration: 'llm_model_load_duration_seconds',
  modelUnloads: 'llm_model_unloads_total',
} as const;

/** The seed's request-duration buckets (seconds). */
export const REQUEST_DURATION_BUCKETS = [0.1, 0.5, 1, 2, 5, 10];
/** Fine below the 500 ms TTFT objective, coarse above it. */
export const TTFT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30];
export const INTER_TOKEN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];
/** Per-step host overhead: the target is <= 0.3 ms at 8 slots, so fine below a millisecond. */
export const HOST_OVERHEAD_BUCKETS = [0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05];
export const QUEUE_WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Registered once in the global prom-client registry (a second app in one process reuses them). */
export const METRIC_PROVIDERS = [
  makeCounterProvider({
    name: METRIC.requests,
    help: 'HTTP requests answered, by route template (unknown routes: "unmatched") and status code; 499 = client went away',
    labelNames: ['endpoint', 'status'],
  }),
  makeHistogramProvider({
    name: METRIC.requestDuration,
    help: 'HTTP request duration in seconds (streams: until the last byte), by route template',
    labelNames: ['endpoint'],
    buckets: REQUEST_DURATION_BUCKETS,
  }),
  makeCounterProvider({ name: METRIC.tokensGenerated, help: 'Completion tokens generated (aborted generations included)', labelNames: ['model'] }),
  makeGaugeProvider({ name: METRIC.activeRequests, help: 'HTTP requests in flight (probes and scrapes excluded)' }),
  makeGaugeProvider({ name: METRIC.gpuUtilization, help: 'GPU utilization percent (nvidia-smi)', labelNames: ['gpu_id'] }),

  makeHistogramProvider({
    name: METRIC.timeToFirstToken,
    help: 'Time from submission to the scheduler to the first generated text, queue wait included (seconds)',
    buckets: TTFT_BUCKETS,
    labelNames: ['model'],
  }),
  makeHistogramProvider({
    name: METRIC.interTokenLatency,
    help: 'Time between two generated tokens of one request (seconds)',
    buckets: INTER_TOKEN_BUCKETS,
    labelNames: ['model'],
    // Observed at every step or token through a HistogramBuffer: brought in before each read.
    collect: flushBuffersOf,
  }),
  makeHistogramProvider({
    name: METRIC.batchStep,
    help: 'Duration of one decode call of the continuous-batching loop (all slots together), in seconds',
    buckets: INTER_TOKEN_BUCKETS,
    labelNames: ['model'],
    // Observed at every step or token through a HistogramBuffer: brought in before each read.
    collect: flushBuffersOf,
  }),
  makeHistogramProvider({
    name: METRIC.batchCompute,
    help: 'Time the engine computed inside one decode call (llama_decode), in seconds; needs the engine addon',
    buckets: INTER_TOKEN_BUCKETS,
    labelNames: ['model'],
    // Observed at every step or token through a HistogramBuffer: brought in before each read.
    collect: flushBuffersOf,
  }),
  makeHistogramProvider({
    name: METRIC.batchThreads,
    help: 'CPU threads one decode call ran on (chosen per step by measured compute unless THREADS is set); needs the engine addon',
    buckets: [1, 2, 4, 8, 16, 32, 64],
    labelNames: ['model'],
    // Observed at every step or token through a HistogramBuffer: brought in before each read.
    collect: flushBuffersOf,
  }),
  makeCounterProvider({
    name: METRIC.batchFilledTokens,
    help:
      'Throwaway tokens decode steps carried to close a hole between busy slots (ENGINE_GAP_FILL: llama.cpp would ' +
      'split the step into one pass per run of consecutive slots) or to pad a step of 5-7 streams to 8 (ENGINE_DECODE_PAD); needs the engine addon',
    labelNames: ['model'],
  }),
  makeHistogramProvider({
    name: METRIC.batchHostOverhead,
    help:
      'Per step of the batching loop, everything that is not engine compute (sampling, scheduling, dispatch and ' +
      'completion latency), for steps that follow the previous one without a pause; needs the engine addon',
    buckets: HOST_OVERHEAD_BUCKETS,
    labelNames: ['model'],
    // Observed at every step or token through a HistogramBuffer: brought in before each read.
    collect: flushBuffersOf,
  }),
  makeHistogramProvider({
    name: METRIC.batchTokens,
    help: 'Tokens evaluated by one decode call (generated tokens of every streaming slot plus prompt chunks)',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
    labelNames: ['model'],
    // Observed at every step or token through a HistogramBuffer: brought in before each read.
    collect: flushBuffersOf,
  }),
  makeHistogramProvider({ name: METRIC.queueWait, help: 'Time a request waited for a free slot (seconds)', buckets: QUEUE_WAIT_BUCKETS, labelNames: ['model'] }),
  makeCounterProvider({ name: METRIC.promptTokens, help: 'Prompt tokens of finished generations (BOS included)', labelNames: ['model'] }),
  makeCounterProvider({
    name: METRIC.promptTokensCached,
    help: 'Prompt tokens served from the slot KV cache (prefix reuse) instead of being evaluated',
    labelNames: ['model'],
  }),
  makeCounterProvider({
    name: METRIC.generations,
    help: 'Generations that ended, by finish reason (stop, length, abort, error)',
    labelNames: ['finish_reason', 'model'],
  }),
  makeCounterProvider({ name: METRIC.aborted, help: 'Generations cancelled before they finished (client disconnect, cancellation)', labelNames: ['model'] }),
  makeCounterProvider({
    name: METRIC.schedulerRejections,
    help: 'Requests the scheduler turned away, by reason (queue_full, queue_timeout, shutting_down, ...)',
    labelNames: ['reason', 'model'],
  }),
  makeGaugeProvider({ name: METRIC.queueDepth, help: 'Requests waiting for a slot', labelNames: ['model'] }),
  makeGaugeProvider({ name: METRIC.queueCapacity, help: 'Requests that may wait for a slot (QUEUE_MAX)', labelNames: ['model'] }),
  makeGaugeProvider({ name: METRIC.slotsBusy, help: 'Slots (KV-cache sequences) generating or evaluating a prompt', labelNames: ['model'] }),
  makeGaugeProvider({ name: METRIC.slotsTotal, help: 'Slots of each chat model (PARALLEL_SLOTS or its own slots setting)', labelNames: ['model'] }),
  makeGaugeProvider({ name: METRIC.schedulerAccepting, help: '1 while the scheduler admits work, 0 while draining or shutting down', labelNames: ['model'] }),
  makeGaugeProvider({ name: METRIC.kvCacheTokens, help: 'Tokens held in the KV cache across all slots', labelNames: ['model'] }),
  makeGaugeProvider({ name: METRIC.kvCacheCapacity, help: 'KV-cache capacity in tokens across a model\'s slots (context size x slots)', labelNames: ['model'] }),
  makeGaugeProvider({ name: METRIC.modelReady, help: '1 when the default model is loaded and serving, 0 while loading or after a failed load (readiness follows it; llm_model_state has every model)' }),
  makeGaugeProvider({
    name: METRIC.modelInfo,
    help: 'Served model, compute backend, decode engine (addon = persistent threadpool) and threads (value is always 1)',
    labelNames: ['model', 'backend', 'engine', 'threads'],
  }),
  makeCounterProvider({
    name: METRIC.cacheLookups,
    help: 'Response-cache lookups by cache (exact, semantic) and result (hit, miss, error)',
    labelNames: ['cache', 'result'],
  }),
  makeCounterProvider({ name: METRIC.rateLimited, help: 'Requests rejected by a rate limit, by limit kind', labelNames: ['kind'] }),
  makeGaugeProvider({
    name: METRIC.dependencyUp,
    help: '1 when a configured dependency (redis, database) answered its last check, else 0',
    labelNames: ['dependency'],
  }),
  makeGaugeProvider({
    name: METRIC.gpuAvailable,
    help: 'NVIDIA GPUs seen by nvidia-smi; 0 = no GPU (or no nvidia-smi): the gpu_* series are then absent',
  }),
  makeGaugeProvider({ name: METRIC.gpuMemoryUsed, help: 'GPU memory used in bytes (nvidia-smi)', labelNames: ['gpu_id'] }),
  makeGaugeProvider({ name: METRIC.gpuMemoryTotal, help: 'GPU memory in bytes (nvidia-smi)', labelNames: ['gpu_id'] }),
  makeCounterProvider({
    name: METRIC.budgetExceeded,
    help: 'Requests refused with 429 budget_exceeded, by the budget period that was spent (day, month)',
    labelNames: ['period'],
  }),
  makeHistogramProvider({
    name: METRIC.usageFlushDuration,
    help: 'Duration of one usage-ledger write to the database (seconds), failed ones included',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  }),
  makeGaugeProvider({
    name: METRIC.usageFlushLag,
    help: 'Age of the oldest usage not yet written to the database (seconds); 0 when everything is written',
  }),
  makeCounterProvider({ name: METRIC.usageFlushFailures, help: 'Usage-ledger writes that failed (kept and retried at the next flush)' }),
  makeCounterProvider({
    name: METRIC.usageDropped,
    help: 'Usage records dropped because the ledger buffer was full (USAGE_BUFFER_MAX) while the database was unreachable',
  }),
  makeGaugeProvider({ name: METRIC.usageBuffered, help: 'Usage buckets (key, model, route, hour) waiting to be written' }),
  makeGaugeProvider({
    name: METRIC.modelState,
    help: 'Each configured model\'s state (unloaded, loading, loaded, unloading, failed): 1 for the current one, else 0',
    labelNames: ['model', 'state'],
  }),
  makeGaugeProvider({
    name: METRIC.modelMemory,
    help: 'Memory a loaded (or loading) model takes, by node-llama-cpp\'s estimate before loading, in bytes (memory: ram, vram)',
    labelNames: ['model', 'memory'],
  }),
  makeGaugeProvider({
    name: METRIC.modelMemoryBudget,
    help: 'MODEL_MEMORY_BUDGET resolved against this machine, in bytes (memory: ram, vram; absent = unlimited)',
    labelNames: ['memory'],
  }),
  makeCounterProvider({ name: METRIC.modelLoads, help: 'Model loads, by model and result (ok, error)', labelNames: ['model', 'result'] }),
  makeHistogramProvider({
    name: METRIC.modelLoadDuration,
    help: 'Time a model took to load (file, weights, context), in seconds',
    labelNames: ['model'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
  }),
  makeCounterProvider({
    name: METRIC.modelUnloads,
    help: 'Model unloads, by model and reason (keep_alive, budget, admin, removed, shutdown)',
    labelNames: ['model', 'reason'],
  }),
];
