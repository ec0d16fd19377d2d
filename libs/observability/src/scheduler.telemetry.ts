import { Injectable, Inject, type OnModuleDestroy } from '@nestjs/common';
import type { ObservabilityConfig } from './observability.config';
import { context, isSpanContextValid, trace } from '@opentelemetry/api';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import type { Counter, Gauge, Histogram } from 'prom-client';
import { AppConfig } from '@app/common';
import { METRIC } from './metrics.providers';
import { RequestTelemetry } from './request.telemetry';
import { recordSpan } from './tracing.api';
import { HistogramBuffer } from './histogram.buffer';
import { StepTrace } from './step.trace';

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
  readonly sequences?: number;
  readonly prompts?: number;
  readonly ms: number;
  readonly computeMs?: number;
  readonly hostMs?: number;
  readonly threads?: number;
  readonly filledTokens?: number;
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
 * The scheduler observer (provided under the inference library's SCHEDULER_OBSERVER token; each
 * model's scheduler gets its own through `forModel`): latency histograms, token counters and
 * slot/queue gauges labelled by model, the request's log fields, and the
 * spans `llm.generation` > `llm.queue_wait`, `llm.prefill`, `llm.decode` built from the hooks'
 * timings when the generation ends.
 *
 * A request that waited in the queue gets its slot when another request finishes, so the
 * scheduler reports that wait from the finishing request's async context. Those reports are kept
 * for a moment and claimed by the waiting request at its first token, matched by submission time.
 */
/** The hooks of one model's scheduler (structurally the batching library's SchedulerObserver). */
export interface ModelSchedulerHooks {
  onQueueWait(ms: number): void;
  onStep(step: StepView): void;
  onRejected(code: string): void;
  onStateChange(snapshot: SchedulerStateView): void;
  onFirstToken(ms: number): void;
  onInterToken(ms: number): void;
  onFinish(outcome: GenerationOutcomeView): void;
}

/** The histograms a model's scheduler observes at every step or token, buffered. */
interface StepBuffers {
  readonly step: HistogramBuffer<'model'>;
  readonly tokens: HistogramBuffer<'model'>;
  readonly compute: HistogramBuffer<'model'>;
  readonly host: HistogramBuffer<'model'>;
  readonly threads: HistogramBuffer<'model'>;
  readonly interToken: HistogramBuffer<'model'>;
}

@Injectable()
export class SchedulerTelemetry implements OnModuleDestroy {
  readonly #model: string;
  /** STEP_TRACE_FILE, when set. */
  readonly #trace: StepTrace | undefined;
  #pending: (Acquisition & { readonly reportedAt: number })[] = [];
  readonly #initialized = new Set<string>();
  /** Per model, the buffered histograms observed at every step or token (HistogramBuffer: why). */
  readonly #buffers = new Map<string, StepBuffers>();
  #configuredHooks: ModelSchedulerHooks | undefined;

  constructor(
    @Inject(AppConfig) private readonly config: ObservabilityConfig,
    @InjectMetric(METRIC.timeToFirstToken) private readonly ttft: Histogram<'model'>,
    @InjectMetric(METRIC.interTokenLatency) private readonly interToken: Histogram<'model'>,
    @InjectMetric(METRIC.queueWait) private readonly queueWait: Histogram<'model'>,
    @InjectMetric(METRIC.batchStep) private readonly batchStep: Histogram<'model'>,
    @InjectMetric(METRIC.batchTokens) private readonly batchTokens: Histogram<'model'>,
    @InjectMetric(METRIC.batchCompute) private readonly batchCompute: Histogram<'model'>,
    @InjectMetric(METRIC.batchHostOverhead) private readonly batchHost: Histogram<'model'>,
    @InjectMetric(METRIC.batchThreads) private readonly batchThreads: Histogram<'model'>,
    @InjectMetric(METRIC.batchFilledTokens) private readonly batchFilled: Counter<'model'>,
    @InjectMetric(METRIC.tokensGenerated) private readonly tokensGenerated: Counter<'model'>,
    @InjectMetric(METRIC.promptTokens) private readonly promptTokens: Counter<'model'>,
    @InjectMetric(METRIC.promptTokensCached) private readonly promptTokensCached: Counter<'model'>,
    @InjectMetric(METRIC.generations) private readonly generations: Counter<'finish_reason' | 'model'>,
    @InjectMetric(METRIC.aborted) private readonly aborted: Counter<'model'>,
    @InjectMetric(METRIC.schedulerRejections) private readonly rejections: Counter<'reason' | 'model'>,
    @InjectMetric(METRIC.queueDepth) private readonly queueDepth: Gauge<'model'>,
    @InjectMetric(METRIC.queueCapacity) private readonly queueCapacity: Gauge<'model'>,
    @InjectMetric(METRIC.slotsBusy) private readonly slotsBusy: Gauge<'model'>,
    @InjectMetric(METRIC.slotsTotal) private readonly slotsTotal: Gauge<'model'>,
    @InjectMetric(METRIC.schedulerAccepting) private readonly accepting: Gauge<'model'>,
  ) {
    this.#model = config.modelName;
    this.#trace = config.stepTraceFile ? new StepTrace(config.stepTraceFile) : undefined;
  }

  onModuleDestroy(): Promise<void> {
    // The histograms outlive this instance (one registry a process): hand over what is buffered and let go.
    for (const buffers of this.#buffers.values()) for (const buffer of Object.values(buffers) as HistogramBuffer[]) buffer.close();
    this.#buffers.clear();
    return this.#trace?.close() ?? Promise.resolve();
  }

  /**
   * The observer of one model's scheduler: every series it records carries `model`. Counters
   * start at 0 for the model, and its gauges are set, as soon as the model has a scheduler.
   */
  forModel(model: string): ModelSchedulerHooks {
    this.#init(model);
    const labels = { model };
    const b = this.#buffersOf(model);
    return {
      onQueueWait: (ms) => this.#onQueueWait(model, ms),
      onStep: (s) => {
        this.#trace?.write(model, s);
        b.step.observe(s.ms / 1000);
        b.tokens.observe(s.tokens);
        if (s.computeMs !== undefined) b.compute.observe(s.computeMs / 1000);
        if (s.hostMs !== undefined) b.host.observe(s.hostMs / 1000);
        if (s.threads !== undefined) b.threads.observe(s.threads);
        if (s.filledTokens) this.batchFilled.inc(labels, s.filledTokens);
      },
      onRejected: (code) => this.rejections.inc({ reason: code, model }),
      onStateChange: (snapshot) => this.#onStateChange(model, snapshot),
      onFirstToken: (ms) => this.#onFirstToken(model, ms),
      onInterToken: (ms) => b.interToken.observe(ms / 1000),
      onFinish: (outcome) => this.#onFinish(model, outcome),
    };
  }

  /** The configured model's hooks, made once (not an object of closures per call). */
  #configured(): ModelSchedulerHooks {
    return (this.#configuredHooks ??= this.forModel(this.#model));
  }

  /** A model was unloaded: its gauges go (counters and histograms stay, as Prometheus expects). */
  modelUnloaded(model: string): void {
    for (const gauge of [this.queueDepth, this.queueCapacity, this.slotsBusy, this.slotsTotal, this.accepting]) gauge.remove({ model });
  }

  // The hooks without forModel(): the configured model (MODEL_NAME).
  onQueueWait(ms: number): void {
    this.#configured().onQueueWait(ms);
  }

  onStep(step: StepView): void {
    this.#configured().onStep(step);
  }

  onRejected(code: string): void {
    this.#configured().onRejected(code);
  }

  onStateChange(snapshot: SchedulerStateView): void {
    this.#configured().onStateChange(snapshot);
  }

  onFirstToken(ms: number): void {
    this.#configured().onFirstToken(ms);
  }

  onInterToken(ms: number): void {
    this.#configured().onInterToken(ms);
  }

  onFinish(outcome: GenerationOutcomeView): void {
    this.#configured().onFinish(outcome);
  }

  /** One set a model, kept across its loads (its series stay when it is unloaded, as Prometheus expects). */
  #buffersOf(model: string): StepBuffers {
    let buffers = this.#buffers.get(model);
    if (!buffers) {
      const labels = { model };
      buffers = {
        step: new HistogramBuffer(this.batchStep, labels),
        tokens: new HistogramBuffer(this.batchTokens, labels),
        compute: new HistogramBuffer(this.batchCompute, labels),
        host: new HistogramBuffer(this.batchHost, labels),
        threads: new HistogramBuffer(this.batchThreads, labels),
        interToken: new HistogramBuffer(this.interToken, labels),
      };
      this.#buffers.set(model, buffers);
    }
    return buffers;
  }

  #init(model: string): void {
    if (this.#initialized.has(model)) return;
    this.#initialized.add(model);
    for (const reason of ['stop', 'length', 'abort', 'error']) this.generations.inc({ finish_reason: reason, model }, 0);
    const labels = { model };
    this.tokensGenerated.inc(labels, 0);
    this.promptTokens.inc(labels, 0);
    this.promptTokensCached.inc(labels, 0);
    for (const reason of ['queue_full', 'queue_timeout', 'shutting_down']) this.rejections.inc({ reason, model }, 0);
    this.aborted.inc(labels, 0);
    this.batchFilled.inc(labels, 0);
  }

  #onQueueWait(model: string, ms: number): void {
    this.queueWait.observe({ model }, ms / 1000);
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

  #onStateChange(model: string, snapshot: SchedulerStateView): void {
    const labels = { model };
    this.queueDepth.set(labels, snapshot.queueDepth);
    this.queueCapacity.set(labels, snapshot.queueCapacity);
    this.slotsBusy.set(labels, snapshot.busySlots);
    this.slotsTotal.set(labels, snapshot.slots.length);
    this.accepting.set(labels, snapshot.accepting ? 1 : 0);
  }

  #onFirstToken(model: string, ms: number): void {
    this.ttft.observe({ model }, ms / 1000);
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

  #onFinish(model: string, outcome: GenerationOutcomeView): void {
    const labels = { model };
    this.tokensGenerated.inc(labels, outcome.completionTokens);
    this.promptTokens.inc(labels, outcome.promptTokens);
    this.promptTokensCached.inc(labels, outcome.cachedPromptTokens);
    this.generations.inc({ finish_reason: outcome.finishReason, model });
    if (outcome.finishReason === 'abort') this.aborted.inc(labels);

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
    this.#recordSpans(model, outcome, submittedAt, acquisition, times.firstTokenAt, end);
    // The request may run another generation; its times start over.
    (telemetry as unknown as Record<symbol, unknown>)[TIMES] = undefined;
  }

  #recordSpans(model: string, outcome: GenerationOutcomeView, submittedAt: number, acquisition: Acquisition | undefined, firstTokenAt: number | undefined, end: number): void {
    const failed = outcome.finishReason === 'error' ? 'generation failed' : undefined;
    const generation = recordSpan('llm.generation', submittedAt, end, {
      attributes: {
        'llm.model': model,
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
