import { Controller, Get } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import { RequireScopes } from '@app/auth';
import { AppConfig } from '@app/common';
import { InferenceService } from '@app/inference';
import type { ModelEntryView } from '@app/inference';
import { METRIC, MetricSample, MetricsService } from '@app/observability';
import { BudgetService, UsageLedgerService } from '@app/usage';
import { loadedModelJson } from '../models/model.view';

/** The series the live view shows: the same samples `/metrics` exposes, read after the same refresh. */
const LIVE = [
  METRIC.slotsBusy,
  METRIC.slotsTotal,
  METRIC.queueDepth,
  METRIC.queueCapacity,
  METRIC.schedulerAccepting,
  METRIC.kvCacheTokens,
  METRIC.kvCacheCapacity,
  METRIC.activeRequests,
  METRIC.tokensGenerated,
  METRIC.promptTokens,
  METRIC.promptTokensCached,
  METRIC.cacheLookups,
  METRIC.requests,
  METRIC.generations,
  METRIC.modelReady,
  METRIC.timeToFirstToken,
  METRIC.usageFlushLag,
  METRIC.budgetExceeded,
];

const sum = (samples: readonly MetricSample[] | undefined, labels: Record<string, string> = {}): number =>
  (samples ?? []).filter((s) => Object.entries(labels).every(([k, v]) => String(s.labels[k]) === v)).reduce((n, s) => n + s.value, 0);

/**
 * `GET /admin/status`: models and their state, and the live figures of this replica (slots,
 * queue, KV cache, caches, requests, tokens, usage ledger) for the web console. Every figure is
 * read from the Prometheus registry behind `/metrics`, so the two never disagree. Needs `admin`.
 */
@ApiTags('admin')
@ApiSecurity('api-key')
@RequireScopes('admin')
@Controller('admin/status')
export class StatusController {
  constructor(
    private readonly metrics: MetricsService,
    private readonly inference: InferenceService,
    private readonly ledger: UsageLedgerService,
    private readonly budgets: BudgetService,
    private readonly config: AppConfig,
  ) {}

  @Get()
  async status(): Promise<object> {
    const m = await this.metrics.read(LIVE);
    const ttft = m[METRIC.timeToFirstToken];
    const ttftCount = sum(ttft, { series: `${METRIC.timeToFirstToken}_count` });
    const lookups = (cache: string): object => ({
      hit: sum(m[METRIC.cacheLookups], { cache, result: 'hit' }),
      miss: sum(m[METRIC.cacheLookups], { cache, result: 'miss' }),
      error: sum(m[METRIC.cacheLookups], { cache, result: 'error' }),
    });
    return {
      instance: this.config.instanceId,
      time: new Date().toISOString(),
      models: this.inference.models().map((m) => this.#model(m)),
      scheduler: {
        slots_busy: sum(m[METRIC.slotsBusy]),
        slots_total: sum(m[METRIC.slotsTotal]),
        queue_depth: sum(m[METRIC.queueDepth]),
        queue_capacity: sum(m[METRIC.queueCapacity]),
        // Every loaded chat model admitting work (each has its own scheduler).
        accepting: (m[METRIC.schedulerAccepting] ?? []).length > 0 && (m[METRIC.schedulerAccepting] ?? []).every((s) => s.value === 1),
        kv_cache_tokens: sum(m[METRIC.kvCacheTokens]),
        kv_cache_capacity_tokens: sum(m[METRIC.kvCacheCapacity]),
      },
      requests: { active: sum(m[METRIC.activeRequests]), total: sum(m[METRIC.requests]) },
      generations: Object.fromEntries((m[METRIC.generations] ?? []).map((s) => [String(s.labels.finish_reason), s.value])),
      tokens: {
        generated: sum(m[METRIC.tokensGenerated]),
        prompt: sum(m[METRIC.promptTokens]),
        prompt_cached: sum(m[METRIC.promptTokensCached]),
      },
      time_to_first_token_avg_seconds: ttftCount > 0 ? sum(ttft, { series: `${METRIC.timeToFirstToken}_sum` }) / ttftCount : null,
      cache: { exact: lookups('exact'), semantic: lookups('semantic') },
      usage: { ...this.ledger.stats(), flush_lag_seconds: sum(m[METRIC.usageFlushLag]) },
      budgets: { backend: this.budgets.backend, exceeded: sum(m[METRIC.budgetExceeded]) },
    };
  }

  /** A model's entry; `state` is `ready` for a loaded model (as before there were several), else the registry's state. */
  #model(m: ModelEntryView): object {
    const d = m.descriptor;
    const base = { id: m.spec.id, kind: m.spec.kind, default: m.isDefault, aliases: m.spec.aliases };
    if (!d) return { ...base, state: m.state === 'unloaded' && m.isDefault ? 'loading' : m.state, ...(m.error ? { error: m.error } : {}) };
    return { ...base, state: 'ready', ...loadedModelJson(d) };
  }
}
