import { Injectable } from '@nestjs/common';
import { context, isSpanContextValid, trace } from '@opentelemetry/api';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import type { Counter, Gauge, Histogram } from 'prom-client';
import { AppConfig } from '@app/common';
import { METRIC } from './metrics.providers';
import { RequestTelemetry } from './request.telemetry';
import { recordSpan } from './tracing.api';

/**
 * The scheduler's view of its state, as its observer receives it. Declared here (structurally the
 * batching library's SchedulerSnapshot) because observability sits below batching.
 */
export interface SchedulerStateView {
  readonly slots: readonly unknown[];
  readonly busySlots: number;
  readonly queueDepth: number;
  readonly queueCapacity: number;
  readonly accepting: boolean;
}

/** One loop step (structurally the batching library's StepStats). */
export interface StepView {
  readonly tokens: number;
  readonly ms: number;
  readonly computeMs?: number;
  readonly hostMs?: number;
  readonly threads?: number;
}

/** How a generation ended (structurally the batching library's RequestOutcome). */
export interface GenerationOutcomeView {
  readonly finishReason: string;
  readonly promptTokens: number;
  readonly cachedPromptTokens: number;
  readonly completionTokens: number;
  readonly durationMs: number;
}

interface Acquisition {
  readonly submittedAt: number;
  readonly acquiredAt: number;
}

interface GenerationTimes {
  acquisition?: Acquisition;
  submittedAt?: number;
  firstTokenAt?: number;
}

const TIMES = Symbol('generationTimes');
/** Acquisitions reported from another request's async context, waiting to be claimed. */
const MAX_PENDING = 1024;
const MATCH_TOLERANCE_MS = 5;

/**
 * The scheduler observer (provided under the inference library's SCHEDULER_OBSERVER token):
 * latency histograms, token counters and slot/queue gauges, the request's log fields, and the
 * spans `llm.generation` > `llm.queue_wait`, `llm.prefill`, `llm.decode` built from the hooks'
 * timings when the generation ends.
 *
 * A request that waited in the queue gets its slot when another request finishes, so the
 * scheduler reports that wait from the finishing request's async context. Those reports are kept
 * for a moment and claimed by the waiting request at its first token, matched by submission time.
 */
@Injectable()
export class SchedulerTelemetry {
  readonly #model: string;
  #pending: (Acquisition & { readonly reportedAt: number })[] = [];

  constructor(
    config: AppConfig,
    @InjectMetric(METRIC.timeToFirstToken) private readonly ttft: Histogram,
    @InjectMetric(METRIC.interTokenLatency) private readonly interToken: Histogram,
    @InjectMetric(METRIC.queueWait) private readonly queueWait: Histogram,
    @InjectMetric(METRIC.batchStep) private readonly batchStep: Histogram,
    @InjectMetric(METRIC.batchTokens) private readonly batchTokens: Histogram,
    @InjectMetric(METRIC.batchCompute) private readonly batchCompute: Histogram,
    @InjectMetric(METRIC.batchHostOverhead) private readonly batchHost: Histogram,
    @InjectMetric(METRIC.batchThreads) private readonly batchThreads: Histogram,
    @InjectMetric(METRIC.tokensGenerated) private readonly tokensGenerated: Counter<'model'>,
    @InjectMetric(METRIC.promptTokens) private readonly promptTokens: Counter<'model'>,
    @InjectMetric(METRIC.promptTokensCached) private readonly promptTokensCached: Counter<'model'>,
    @InjectMetric(METRIC.generations) private readonly generations: Counter<'finish_reason'>,
    @InjectMetric(METRIC.aborted) private readonly aborted: Counter,
    @InjectMetric(METRIC.schedulerRejections) private readonly rejections: Counter<'reason'>,
    @InjectMetric(METRIC.queueDepth) private readonly queueDepth: Gauge,
    @InjectMetric(METRIC.queueCapacity) private readonly queueCapacity: Gauge,
    @InjectMetric(METRIC.slotsBusy) private readonly slotsBusy: Gauge,
    @InjectMetric(METRIC.slotsTotal) private readonly slotsTotal: Gauge,
    @InjectMetric(METRIC.schedulerAccepting) private readonly accepting: Gauge,
  ) {
    this.#model = config.modelName;
    for (const reason of ['stop', 'length', 'abort', 'error']) this.generations.inc({ finish_reason: reason }, 0);
    for (const labels of [{ model: this.#model }]) {
      this.tokensGenerated.inc(labels, 0);
      this.promptTokens.inc(labels, 0);
      this.promptTokensCached.inc(labels, 0);
    }
    for (const reason of ['queue_full', 'queue_timeout', 'shutting_down']) this.rejections.inc({ reason }, 0);
    this.aborted.inc(0);
    this.queueDepth.set(0);
    this.slotsBusy.set(0);
    this.slotsTotal.set(config.parallelSlots);
    this.queueCapacity.set(config.queueMax);
    this.accepting.set(1);
  }

  onQueueWait(ms: number): void {
    this.queueWait.observe(ms / 1000);
    const now = performance.now();
    const acquisition = { submittedAt: now - ms, acquiredAt: now };
    const own = this.#times();
    // Only a request that has no slot yet can be the one that just got it.
    if (own && !own.acquisition) {
      own.acquisition = acquisition;
      return;
    }
    this.#pending.push({ ...acquisition, reportedAt: now });
    if (this.#pending.length > MAX_PENDING) this.#pending.splice(0, this.#pending.length - MAX_PENDING);
  }

  onStep(step: StepView): void {
    this.batchStep.observe(step.ms / 1000);
    this.batchTokens.observe(step.tokens);
    if (step.computeMs !== undefined) this.batchCompute.observe(step.computeMs / 1000);
    if (step.hostMs !== undefined) this.batchHost.observe(step.hostMs / 1000);
    if (step.threads !== undefined) this.batchThreads.observe(step.threads);
  }

  onRejected(code: string): void {
    this.rejections.inc({ reason: code });
  }

  onStateChange(snapshot: SchedulerStateView): void {
    this.queueDepth.set(snapshot.queueDepth);
    this.queueCapacity.set(snapshot.queueCapacity);
    this.slotsBusy.set(snapshot.busySlots);
    this.slotsTotal.set(snapshot.slots.length);
    this.accepting.set(snapshot.accepting ? 1 : 0);
  }

  onFirstToken(ms: number): void {
    this.ttft.observe(ms / 1000);
    const times = this.#times();
    if (!times) return;
    const now = performance.now();
    times.firstTokenAt = now;
    times.submittedAt = now - ms;
    times.acquisition ??= this.#claim(times.submittedAt);
    const telemetry = RequestTelemetry.current();
    if (telemetry) {
      telemetry.ttftMs = round(ms);
      if (times.acquisition) telemetry.queueWaitMs = round(times.acquisition.acquiredAt - times.acquisition.submittedAt);
    }
  }

  onInterToken(ms: number): void {
    this.interToken.observe(ms / 1000);
  }

  onFinish(outcome: GenerationOutcomeView): void {
    const labels = { model: this.#model };
    this.tokensGenerated.inc(labels, outcome.completionTokens);
    this.promptTokens.inc(labels, outcome.promptTokens);
    this.promptTokensCached.inc(labels, outcome.cachedPromptTokens);
    this.generations.inc({ finish_reason: outcome.finishReason });
    if (outcome.finishReason === 'abort') this.aborted.inc();

    const telemetry = RequestTelemetry.current();
    const times = this.#times();
    if (!telemetry || !times) return;
    telemetry.promptTokens += outcome.promptTokens;
    telemetry.cachedPromptTokens += outcome.cachedPromptTokens;
    telemetry.completionTokens += outcome.completionTokens;
    telemetry.finishReason = outcome.finishReason;
    const end = performance.now();
    const submittedAt = times.submittedAt ?? end - outcome.durationMs;
    const acquisition = times.acquisition ?? this.#claim(submittedAt);
    if (acquisition && telemetry.queueWaitMs === undefined) telemetry.queueWaitMs = round(acquisition.acquiredAt - acquisition.submittedAt);
    this.#recordSpans(outcome, submittedAt, acquisition, times.firstTokenAt, end);
    // The request may run another generation; its times start over.
    (telemetry as unknown as Record<symbol, unknown>)[TIMES] = undefined;
  }

  #recordSpans(outcome: GenerationOutcomeView, submittedAt: number, acquisition: Acquisition | undefined, firstTokenAt: number | undefined, end: number): void {
    const failed = outcome.finishReason === 'error' ? 'generation failed' : undefined;
    const generation = recordSpan('llm.generation', submittedAt, end, {
      attributes: {
        'llm.model': this.#model,
        'llm.finish_reason': outcome.finishReason,
        'llm.usage.prompt_tokens': outcome.promptTokens,
        'llm.usage.cached_prompt_tokens': outcome.cachedPromptTokens,
        'llm.usage.completion_tokens': outcome.completionTokens,
      },
      error: failed,
    });
    if (!isSpanContextValid(generation.spanContext())) return; // tracing off
    const parent = trace.setSpan(context.active(), generation);
    const acquiredAt = acquisition?.acquiredAt ?? submittedAt;
    if (acquisition) recordSpan('llm.queue_wait', acquisition.submittedAt, acquisition.acquiredAt, { parent });
    recordSpan('llm.prefill', acquiredAt, firstTokenAt ?? end, {
      parent,
      attributes: { 'llm.usage.prompt_tokens': outcome.promptTokens, 'llm.usage.cached_prompt_tokens': outcome.cachedPromptTokens },
      error: firstTokenAt === undefined ? failed : undefined,
    });
    if (firstTokenAt !== undefined) {
      recordSpan('llm.decode', firstTokenAt, end, { parent, attributes: { 'llm.usage.completion_tokens': outcome.completionTokens }, error: failed });
    }
  }

  #times(): GenerationTimes | undefined {
    const telemetry = RequestTelemetry.current() as unknown as Record<symbol, GenerationTimes | undefined> | undefined;
    if (!telemetry) return undefined;
    return (telemetry[TIMES] ??= {});
  }

  #claim(submittedAt: number): Acquisition | undefined {
    const now = performance.now();
    this.#pending = this.#pending.filter((p) => now - p.reportedAt < 300_000);
    let best = -1;
    let bestGap = MATCH_TOLERANCE_MS;
    this.#pending.forEach((p, i) => {
      const gap = Math.abs(p.submittedAt - submittedAt);
      if (gap <= bestGap) {
        best = i;
        bestGap = gap;
      }
    });
    return best >= 0 ? this.#pending.splice(best, 1)[0] : undefined;
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
