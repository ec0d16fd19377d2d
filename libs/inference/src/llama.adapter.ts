import { Logger } from '@nestjs/common';
import { existsSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as NodeLlamaCpp from 'node-llama-cpp';
import { LruMap } from '@app/common';
import { BatchItem, DecodeReport, DecodeRuntime, RunPlan, RunStep, SampledLogprobs, SamplingParams } from '@app/batching';
import { EngineAddon, loadEngineAddon } from './engine/engine.addon';
import { AdaptiveThreadPolicy, PAD_WIDTH, slotRuns, StepPlan } from './engine/thread.policy';
import type { GpuProbeResult } from './gpu.probe';
import { AUX_CONTEXT_MAX, ggmlKvType, LlamaBackend } from './registry/llama.backend';
import type { ModelSpec } from './registry/model.types';
import { InferenceErrorCode, InferenceException } from './inference.exception';
import { ChatMessage, EmbeddingResult, EmbeddingTokenizer, ModelDescriptor, RenderedChat } from './inference.types';
import { grammarForJsonObject, SchemaGrammarError } from './grammar/json-schema.grammar';
import { GrammarCompiler, SchemaLimits } from './grammar.compiler';
import { grammarForToolCalls } from './tools/tool-call.grammar';
import { GENERIC_TOOL_SYNTAX, ToolCallSyntax, ToolDefinition } from './tools/tool.types';

type Lib = typeof NodeLlamaCpp;

/**
 * A role marker of the fallback template at the start of a line of message text (any case, any
 * line break). Written as is, `hi\nAssistant: sure` in a user message would forge a turn (and
 * `Tool: …` a tool result).
 */
const ROLE_MARKER_AT_LINE_START = /(^|\r\n|[\n\r\u0085\u2028\u2029])(?=[ \t]*(?:user|assistant|system|tool)[ \t]*:)/gi;

/** Message text with each line that starts like a turn marker indented by one space: turns start at column 0 only. */
export function escapeRoleMarkers(text: string): string {
  return text.replace(ROLE_MARKER_AT_LINE_START, '$1 ');
}

/** Used when the GGUF carries no chat template; documented in the README. */
export const FALLBACK_CHAT_TEMPLATE = {
  system: (text: string) => `${escapeRoleMarkers(text)}\n\n`,
  user: (text: string) => `User: ${escapeRoleMarkers(text)}\n`,
  assistant: (text: string) => `Assistant: ${escapeRoleMarkers(text)}\n`,
  /** A tool's result (the answer to a call in the generic tool syntax). */
  tool: (text: string) => `Tool: ${escapeRoleMarkers(text)}\n`,
  /** Written before the first message when the request has tools (one JSON line per tool). */
  tools: (lines: readonly string[]) =>
    `You can call these functions:\n${lines.join('\n')}\n` +
    `To call functions, answer with one line per call: ${GENERIC_TOOL_SYNTAX.prefix}<function name>${GENERIC_TOOL_SYNTAX.paramsPrefix}<arguments as JSON>${GENERIC_TOOL_SYNTAX.suffix}\n\n`,
  generationPrompt: 'Assistant:',
  stop: ['\nUser:'],
} as const;

/** Default top-k when a request does not set one: llama.cpp's server default, and cheap to sample. */
const DEFAULT_TOP_K = 40;
/** OpenAI's logit_bias of -100 is a ban: the token is never sampled, whatever its logit. */
const BAN_BIAS = -100;
/** What OpenAI reports for a token whose probability underflows to 0. */
const MIN_LOGPROB = -9999;
/** Most top logprobs per token (OpenAI's top_logprobs bound); the engine addon's output layout. */
const LOGPROB_TOP_MAX = 20;
/** Tokens of history the repetition penalties look at (llama.cpp's default penalty_last_n). */
const PENALTY_WINDOW = 64;
const NO_TOKENS = new Uint32Array(0);

/**
 * The parts of node-llama-cpp's native context and sampler this adapter drives directly.
 * They are internal to node-llama-cpp 3.21.1, which is pinned exactly for that reason; the
 * public API decodes each sequence in its own async loop, which splits steps into several small
 * decode calls and costs a thread-pool round trip per token (see docs/PERFORMANCE.md).
 */
interface NativeContext {
  initBatch(size: number): void;
  addToBatch(sequenceId: number, firstTokenPosition: number, tokens: Uint32Array, logitIndexes: Uint32Array): Uint32Array;
  decodeBatch(): Promise<void>;
  sampleToken(batchLogitIndex: number, sampler: NativeSampler): Promise<number>;
  /** With `true`: [token, [id, probability, id, probability, …]] over the sampler's candidates, most likely first. */
  sampleToken(batchLogitIndex: number, sampler: NativeSampler, probabilities: true): Promise<[number, number[] | undefined]>;
  removeTokenCellsFromSequence(sequenceId: number, start: number, end: number): boolean;
  disposeSequence(sequenceId: number): void;
  saveSequenceStateToFile(path: string, sequenceId: number, tokens: Uint32Array): Promise<number>;
  loadSequenceStateFromFile(path: string, sequenceId: number, maxTokens: number): Promise<Uint32Array>;
}
interface NativeSampler {
  applyConfig(config: Record<string, unknown>): void;
  dispose(): void;
}

/** The engine addon as the runtime uses it: its functions, the thread ceiling, and the policy below it (none = fixed THREADS). */
interface Engine {
  readonly addon: EngineAddon;
  readonly maxThreads: number;
  readonly policy: AdaptiveThreadPolicy | null;
  /** Steps run back to back on the addon's thread (ENGINE_LOOP=native) instead of one call per step. */
  readonly nativeLoop: boolean;
  /** The native loop takes fed prompts in alone, the generating items a step later (ENGINE_PROMPT_ALONE). */
  readonly promptAlone: boolean;
  /** The native loop packs every fed prompt while the generating items are about to end (PROMPT_DRAIN_PACK). */
  readonly drainPack: boolean;
  /** The policy measures small decode steps split into one call per token too (ENGINE_DECODE_SPLIT). */
  readonly splitDecode: boolean;
  /** The policy measures decode steps of five to seven streams padded to eight tokens too (ENGINE_DECODE_PAD). */
  readonly padDecode: boolean;
  /** Holes of up to this many idle slots are filled (ENGINE_GAP_FILL): they do not break a run of slots. */
  readonly gapFill: number;
}

/** What the runtime knows of the run in flight, to tell what each reported item stands for. */
interface RunState {
  /** Prompt tokens of prompts fed to the run and not reported yet, by slot. */
  readonly fed: Map<number, readonly number[]>;
  /** The token each slot sampled last (its next item decodes it). */
  readonly last: Map<number, number>;
  /** Alternatives a slot reports (SamplingParams.logprobs); absent = none. */
  readonly topBySlot: Map<number, number>;
  readonly stopOnEog: Map<number, boolean>;
  /** Sampling items of the last reported step that go on, and those it held back (for the thread policy). */
  goingOn: number;
  /** Runs of consecutive slots among the items that go on (for the thread policy's kind of step). */
  goingRuns: number;
  /** The last reported step evaluated a prompt (an item of two tokens or more): the next one holds nothing back (setPromptAlone). */
  promptLast: boolean;
  /** Prompt tokens the loop packs into one step (the latest feed's limit). */
  packTokens: number;
  /** Tokens each generating slot may still sample (its plan's budget less what it sampled), for the drain rule. */
  readonly budgets: Map<number, number>;
}

/** performance.now() minus the monotonic clock the addon reports in (both CLOCK_MONOTONIC here), ms. */
const MONOTONIC_TO_PERFORMANCE = performance.now() - Number(process.hrtime.bigint()) / 1e6;

/**
 * One batch per step over the shared context's sequences: the scheduler's DecodeRuntime.
 * Sequence i of the context is slot i.
 */
class LlamaDecodeRuntime implements DecodeRuntime {
  readonly #logitIndex: number[];
  readonly #stateDir: string;
  #copies = 0;
  /** Threads the context decodes with now (changed per step by threadsForStep). */
  #threads: number;
  /** Whether the context's next steps split small decode steps (setDecodeSplit; the policy's choice). */
  #split = false;
  /** Whether the context's next steps pad decode steps of five to seven streams (setDecodePad; the policy's choice). */
  #pad = false;
  /** The engine addon's step layout, reused across steps (grown when a step needs more). */
  #spec = new Int32Array(1024);
  /** Tokens the last fused step sampled, by slot (engine addon only). */
  readonly #sampled: number[] = [];

  readonly #samplers: NativeSampler[];

  readonly run?: DecodeRuntime['run'];
  readonly interrupt?: DecodeRuntime['interrupt'];
  readonly feed?: DecodeRuntime['feed'];
  /** The run in flight (the latest started: the next may start from the previous one's final step). */
  #current: RunState | null = null;

  /** Grammar states of constrained requests, kept alive while their slot samples with them. */
  readonly #grammarStates: unknown[] = [];
  /** Alternatives each slot reports (SamplingParams.logprobs), undefined when it reports none. */
  readonly #logprobTop: (number | undefined)[] = [];
  /** What the last sample() found for each slot that reports log-probabilities. */
  readonly #lastLogprobs: (SampledLogprobs | undefined)[] = [];
  /**
   * Greedy samplers without bias, penalties or grammar, one per slot, created on first use: asked
   * for probabilities they return the softmax of the raw logits over the whole vocabulary, which
   * is what OpenAI's logprobs are (the slot's own sampler reports its candidates after top-k and
   * temperature instead).
   */
  readonly #probes: (NativeSampler | undefined)[] = [];

  constructor(
    private readonly ctx: NativeContext,
    private readonly newSampler: () => NativeSampler,
    private readonly newGrammarState: (grammar: unknown) => { _state: unknown },
    readonly slotCount: number,
    readonly batchSize: number,
    readonly contextSize: number,
    private readonly isEog: (token: number) => boolean,
    private readonly eogTokens: readonly number[],
    private readonly engine: Engine | null,
  ) {
    this.#threads = engine?.maxThreads ?? 0;
    this.#samplers = Array.from({ length: slotCount }, () => newSampler());
    this.#logitIndex = this.#samplers.map(() => -1);
    this.#stateDir = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
    if (engine?.nativeLoop && engine.addon.run && engine.addon.interrupt) {
      const addon = engine.addon as Required<EngineAddon>;
      this.run = (items, plans, onStep) => this.#run(engine, addon, items, plans, onStep);
      this.interrupt = () => addon.interrupt(this.ctx);
      if (typeof engine.addon.feed === 'function') this.feed = (items, plans, packTokens) => this.#feed(engine, addon, items, plans, packTokens);
    }
  }

  configure(slot: number, s: SamplingParams, prompt: readonly number[]): void {
    const penalties = (s.repeatPenalty ?? 1) !== 1 || (s.presencePenalty ?? 0) !== 0 || (s.frequencyPenalty ?? 0) !== 0;
    const config: Record<string, unknown> = {
      temperature: s.temperature ?? 0,
      topK: s.topK ?? DEFAULT_TOP_K,
      topP: s.topP ?? 1,
      minP: s.minP ?? 0,
      seed: s.seed ?? Math.floor(Math.random() * 0xffffffff),
      repeatPenalty: s.repeatPenalty ?? 1,
      repeatPenaltyMaxTokens: PENALTY_WINDOW,
      repeatPenaltyTokens: penalties ? Uint32Array.from(prompt.slice(-PENALTY_WINDOW)) : NO_TOKENS,
      repeatPenaltyPresencePenalty: s.presencePenalty ?? 0,
      repeatPenaltyFrequencyPenalty: s.frequencyPenalty ?? 0,
    };
    this.#grammarStates[slot] = undefined;
    if (s.constraint) {
      const state = this.newGrammarState(s.constraint);
      this.#grammarStates[slot] = state;
      config.grammarEvaluationState = state._state;
    }
    const bias = new Map<number, number>();
    for (const [token, value] of s.logitBias ?? []) bias.set(token, value <= BAN_BIAS ? -Infinity : value);
    if (s.ignoreEos) for (const token of this.eogTokens) bias.set(token, -Infinity);
    if (bias.size) {
      config.tokenBiasKeys = Uint32Array.from(bias.keys());
      config.tokenBiasValues = Float32Array.from(bias.values());
    }
    this.#logprobTop[slot] = s.logprobs;
    this.#lastLogprobs[slot] = undefined;
    // The slot's sampler is reconfigured, not replaced: a new native sampler took 1.3–18 ms of
    // Node's thread in 41 of 96 requests under 8 streams on 2 cores (it allocates a candidate
    // array of the whole vocabulary; the old one is freed by the GC later). applyConfig replaces
    // every part whose setting changed (bias, penalties with their history, grammar) and keeps
    // the others, which hold no state, except the seeded draw: it keeps its RNG running while the
    // seed is unchanged. Setting another seed first starts it afresh, as a new sampler would.
    const sampler = this.#samplers[slot];
    sampler.applyConfig({ ...config, seed: ((config.seed as number) ^ 1) >>> 0 });
    sampler.applyConfig(config);
  }

  async decode(items: readonly BatchItem[]): Promise<DecodeReport | void> {
    const engine = this.engine;
    if (engine) return this.#step(engine, items);
    let total = 0;
    for (const item of items) total += item.tokens.length;
    this.ctx.initBatch(total);
    for (const item of items) {
      const logits = item.logits ? Uint32Array.of(item.tokens.length - 1) : NO_TOKENS;
      const indexes = this.ctx.addToBatch(item.slot, item.position, Uint32Array.from(item.tokens), logits);
      if (item.logits) this.#logitIndex[item.slot] = indexes[0];
    }
    return this.ctx.decodeBatch();
  }

  /**
   * With the engine addon, decode and sampling are one native call per step: the batch is
   * written into one typed array, every slot that wants logits is sampled on the worker thread
   * right after the decode, and sample() then just hands those tokens out.
   */
  async #step(engine: Engine, items: readonly BatchItem[]): Promise<DecodeReport> {
    const { length, sampling, samplers } = this.#fillSpec(items);
    const threads = this.#chooseThreads(engine, items);
    const out = new Int32Array(sampling);
    const top = this.#logprobRequests(items, sampling);
    const lpTokens = top ? new Int32Array(sampling * LOGPROB_TOP_MAX) : undefined;
    const lpValues = top ? new Float32Array(sampling * (LOGPROB_TOP_MAX + 1)) : undefined;
    const info = new Int32Array(3);
    const ms = await engine.addon.step(this.ctx, this.#spec, samplers, out, length, top, lpTokens, lpValues, info);
    engine.policy?.record(items.length, tokenCount(items), threads, ms, info[1] === 1, slotRuns(items.map((item) => item.slot), engine.gapFill), info[2] > 0);
    let k = 0;
    for (const item of items) {
      if (!item.logits) continue;
      this.#sampled[item.slot] = out[k];
      if (top && lpTokens && lpValues && top[k] >= 0) this.#lastLogprobs[item.slot] = this.#readLogprobs(k, top[k], lpTokens, lpValues);
      k++;
    }
    return { computeMs: ms, threads, filledTokens: info[0] };
  }

  /**
   * The native loop: the addon steps on its own thread and feeds every sampled token back as the
   * slot's next decode item, with no round trip through the event loop between steps (the
   * dispatch and completion latency of one thread-pool job per step was most of the host
   * overhead, docs/PERFORMANCE.md). Each step comes back here while the next one computes.
   */
  async #run(engine: Engine, addon: Required<EngineAddon>, items: readonly BatchItem[], plans: readonly RunPlan[], onStep: (step: RunStep) => void): Promise<void> {
    const { length, sampling, samplers } = this.#fillSpec(items);
    this.#chooseThreads(engine, items);
    const top = this.#logprobRequests(items, sampling);
    const state: RunState = { fed: new Map(), last: new Map(), topBySlot: new Map(), stopOnEog: new Map(), goingOn: 0, goingRuns: 1, promptLast: false, packTokens: 1, budgets: new Map() };
    let k0 = 0;
    for (const item of items) {
      if (!item.logits) continue;
      if (top && top[k0] >= 0) state.topBySlot.set(item.slot, top[k0]);
      state.stopOnEog.set(item.slot, plans[k0].stopOnEog);
      state.budgets.set(item.slot, plans[k0].budget);
      k0++;
    }
    let first = true;
    const running = addon.run(
      this.ctx,
      this.#spec,
      samplers,
      planArray(plans),
      // Parameters typed by EngineAddon.run's onStep.
      (layout, computeMs, threads, doneAt, final, lpTokens, lpValues, filled, held, split, padTo) => {
        const stepItems: BatchItem[] = [];
        const sampled: number[] = [];
        let goingOn = 0;
        const going: number[] = [];
        for (let i = 0, n = 0; i < layout.length; i += 4, n++) {
          const slot = layout[i];
          const token = layout[i + 3];
          // A fed prompt is reported once, whole; later steps decode exactly the token the
          // previous step sampled for the slot.
          const fed = first ? undefined : state.fed.get(slot);
          if (fed) state.fed.delete(slot);
          const tokens = first ? items[n].tokens : (fed ?? [state.last.get(slot) as number]);
          const logits = token !== -2;
          stepItems.push({ slot, tokens, position: layout[i + 1], logits });
          if (!logits) continue;
          const k = sampled.length;
          sampled.push(token);
          state.last.set(slot, token);
          const want = state.topBySlot.get(slot);
          if (want !== undefined && lpTokens && lpValues) this.#lastLogprobs[slot] = this.#readLogprobs(k, want, lpTokens, lpValues);
          const budget = (state.budgets.get(slot) ?? 1) - 1;
          if (token >= 0 && !(state.stopOnEog.get(slot) && this.isEog(token)) && budget > 0) {
            goingOn++;
            going.push(slot);
            state.budgets.set(slot, budget);
          } else state.budgets.delete(slot);
        }
        first = false;
        // Items the step held back (a prompt went alone) are not in its layout and go on.
        state.goingOn = goingOn + (held ?? 0);
        state.goingRuns = slotRuns(going, engine.gapFill);
        state.promptLast = stepItems.some((item) => item.tokens.length >= 2);
        engine.policy?.record(
          stepItems.length,
          tokenCount(stepItems),
          threads,
          computeMs,
          split === true,
          slotRuns(stepItems.map((item) => item.slot), engine.gapFill),
          (padTo ?? 0) > 0,
        );
        onStep({ items: stepItems, sampled, report: { computeMs, threads, filledTokens: filled ?? 0 }, doneAt: doneAt + MONOTONIC_TO_PERFORMANCE, final });
        // Threads for the next step (the addon switches before it starts, if it has not already).
        if (goingOn > 0 || state.fed.size > 0) this.#rethread(engine, state);
      },
      length,
      top,
    );
    this.#current = state;
    try {
      await running;
    } finally {
      if (this.#current === state) this.#current = null;
    }
  }

  /** Hands the run in flight whole prompts (DecodeRuntime.feed); false when it takes no more. */
  #feed(engine: Engine, addon: Required<EngineAddon>, items: readonly BatchItem[], plans: readonly RunPlan[], packTokens: number): boolean {
    const state = this.#current;
    if (!state || items.length === 0) return false;
    const { length, sampling, samplers } = this.#fillSpec(items);
    const top = this.#logprobRequests(items, sampling);
    if (!addon.feed(this.ctx, this.#spec, samplers, planArray(plans), packTokens, length, top)) return false;
    state.packTokens = Math.max(1, packTokens);
    items.forEach((item, k) => {
      state.fed.set(item.slot, item.tokens);
      state.stopOnEog.set(item.slot, plans[k].stopOnEog);
      state.budgets.set(item.slot, plans[k].budget);
      if (top && top[k] >= 0) state.topBySlot.set(item.slot, top[k]);
      else state.topBySlot.delete(item.slot);
    });
    this.#rethread(engine, state);
    return true;
  }

  /** The thread policy's choice for the run's next steps: the slots that go on and the prompts fed and not taken yet. */
  #rethread(engine: Engine, state: RunState): void {
    if (!engine.policy) return;
    // The next step as the loop will make it: the slots that go on, and the fed prompts it takes in
    // (as the addon's TakeFed: oldest first, the first whatever its size, the others within the
    // pack limit, all within the batch). Counting every fed prompt named a kind of step that does
    // not come (two prompts where one is taken), so the figure of a try landed on another kind.
    let tokens = state.goingOn;
    let sequences = state.goingOn;
    let packed = 0;
    let long = false;
    let taken = 0;
    // As the addon's DrainPacks: every fed prompt while the generating slots are about to end.
    let limit = state.packTokens;
    if (engine.drainPack && state.goingOn > 0 && state.fed.size >= 2) {
      let latest = 0;
      for (const [slot, budget] of state.budgets) if (!state.fed.has(slot)) latest = Math.max(latest, budget);
      if (latest <= state.fed.size) limit = this.batchSize;
    }
    for (const prompt of state.fed.values()) {
      if ((packed > 0 && packed + prompt.length > limit) || tokens + prompt.length > this.batchSize) break;
      packed += prompt.length;
      tokens += prompt.length;
      sequences++;
      taken++;
      long ||= prompt.length >= 2;
    }
    // As the addon's TakeFed: a step that takes a prompt in leaves the generating items to the
    // next one (setPromptAlone), unless the step before evaluated a prompt.
    if (engine.promptAlone && long && !state.promptLast && state.goingOn > 0) {
      tokens = packed;
      sequences = taken;
    }
    this.#apply(engine, engine.policy.choose(sequences, tokens, taken === 0 ? state.goingRuns : 1));
  }

  /** Applies a step plan to the context (the addon switches a run in flight before its next step). */
  #apply(engine: Engine, plan: StepPlan): void {
    if (plan.threads !== this.#threads) {
      engine.addon.setThreads(this.ctx, plan.threads);
      this.#threads = plan.threads;
    }
    if (plan.split !== this.#split) {
      engine.addon.setDecodeSplit?.(this.ctx, plan.split);
      this.#split = plan.split;
    }
    if (plan.pad !== this.#pad) {
      engine.addon.setDecodePad?.(this.ctx, plan.pad ? PAD_WIDTH : 0);
      this.#pad = plan.pad;
    }
  }

  /** Writes the items into the addon's step layout; the samplers of the items with logits, in order. */
  #fillSpec(items: readonly BatchItem[]): { length: number; sampling: number; samplers: NativeSampler[] } {
    let length = 0;
    for (const item of items) length += 4 + item.tokens.length;
    if (this.#spec.length < length) this.#spec = new Int32Array(Math.max(length, this.#spec.length * 2));
    const spec = this.#spec;
    const samplers: NativeSampler[] = [];
    let at = 0;
    for (const item of items) {
      spec[at++] = item.slot;
      spec[at++] = item.position;
      spec[at++] = item.tokens.length;
      spec[at++] = item.logits ? 1 : 0;
      for (const token of item.tokens) spec[at++] = token;
      if (item.logits) samplers.push(this.#samplers[item.slot]);
    }
    return { length, sampling: samplers.length, samplers };
  }

  /** Threads for a step of these items (the policy's choice, or the fixed count), applied to the context. */
  #chooseThreads(engine: Engine, items: readonly BatchItem[]): number {
    const plan = engine.policy
      ? engine.policy.choose(items.length, tokenCount(items), slotRuns(items.map((item) => item.slot), engine.gapFill))
      : { threads: engine.maxThreads, split: false, pad: false };
    this.#apply(engine, plan);
    return plan.threads;
  }

  /** Per item with logits: how many alternatives its request wants (-1 = no logprobs); undefined when none does. */
  #logprobRequests(items: readonly BatchItem[], sampling: number): Int32Array | undefined {
    let top: Int32Array | undefined;
    let k = 0;
    for (const item of items) {
      if (!item.logits) continue;
      const want = this.#logprobTop[item.slot];
      if (want !== undefined) (top ??= new Int32Array(sampling).fill(-1))[k] = want;
      k++;
    }
    return top;
  }

  #readLogprobs(k: number, top: number, lpTokens: Int32Array, lpValues: Float32Array): SampledLogprobs {
    const best: { token: number; logprob: number }[] = [];
    for (let i = 0; i < top; i++) best.push({ token: lpTokens[k * LOGPROB_TOP_MAX + i], logprob: lpValues[k * (LOGPROB_TOP_MAX + 1) + 1 + i] });
    return { logprob: lpValues[k * (LOGPROB_TOP_MAX + 1)], top: best };
  }

  sample(slots: readonly number[]): Promise<number[]> {
    if (this.engine) return Promise.resolve(slots.map((slot) => this.#sampled[slot]));
    return Promise.all(
      slots.map(async (slot) => {
        const top = this.#logprobTop[slot];
        if (top === undefined) return this.ctx.sampleToken(this.#logitIndex[slot], this.#samplers[slot]);
        // The probe reads the same logits first; it changes no state the real sampler uses.
        if (!this.#probes[slot]) {
          // An empty config is a bare greedy sampler (a sampler never configured has no chain at all).
          this.#probes[slot] = this.newSampler();
          this.#probes[slot].applyConfig({});
        }
        const [, probabilities] = await this.ctx.sampleToken(this.#logitIndex[slot], this.#probes[slot] as NativeSampler, true);
        const token = await this.ctx.sampleToken(this.#logitIndex[slot], this.#samplers[slot]);
        this.#lastLogprobs[slot] = logprobsOf(token, probabilities ?? [], top);
        return token;
      }),
    );
  }

  sampledLogprobs(slot: number): SampledLogprobs | undefined {
    return this.#lastLogprobs[slot];
  }

  isEndOfGeneration(token: number): boolean {
    return token < 0 || this.isEog(token);
  }

  truncate(slot: number, from: number): number {
    if (from <= 0) {
      this.ctx.disposeSequence(slot);
      return 0;
    }
    if (this.ctx.removeTokenCellsFromSequence(slot, from, -1)) return from;
    this.ctx.disposeSequence(slot);
    return 0;
  }

  /** Copies through a state file on tmpfs: save `from`'s cells, load them into `to`, cut to length. */
  async copyPrefix(from: number, to: number, length: number): Promise<void> {
    const file = join(this.#stateDir, `llm-kv-${process.pid}-${this.#copies++}.bin`);
    try {
      await this.ctx.saveSequenceStateToFile(file, from, NO_TOKENS);
      this.ctx.disposeSequence(to);
      await this.ctx.loadSequenceStateFromFile(file, to, 0);
      if (!this.ctx.removeTokenCellsFromSequence(to, length, -1)) throw new Error(`cannot cut slot ${to} to ${length} tokens`);
    } finally {
      rmSync(file, { force: true });
    }
  }

  dispose(): void {
    for (const sampler of this.#samplers) sampler.dispose();
    for (const probe of this.#probes) probe?.dispose();
  }
}

/** A run's plans as the addon reads them: [budget, stopOnEog 0|1] per item with logits. */
function planArray(plans: readonly RunPlan[]): Int32Array {
  const plan = new Int32Array(2 * plans.length);
  plans.forEach((p, k) => {
    plan[2 * k] = p.budget;
    plan[2 * k + 1] = p.stopOnEog ? 1 : 0;
  });
  return plan;
}

function tokenCount(items: readonly BatchItem[]): number {
  let total = 0;
  for (const item of items) total += item.tokens.length;
  return total;
}

/** Picks the sampled token's and the `top` best log-probabilities out of [id, p, id, p, …] (best first). */
function logprobsOf(token: number, flat: readonly number[], top: number): SampledLogprobs {
  const lp = (p: number): number => (p > 0 ? Math.max(MIN_LOGPROB, Math.log(p)) : MIN_LOGPROB);
  let logprob = MIN_LOGPROB;
  for (let i = 0; i < flat.length; i += 2) {
    if (flat[i] === token) {
      logprob = lp(flat[i + 1]);
      break;
    }
  }
  const best: { token: number; logprob: number }[] = [];
  for (let i = 0; i < flat.length && best.length < top; i += 2) best.push({ token: flat[i], logprob: lp(flat[i + 1]) });
  return { logprob, top: best };
}

/** How the startup lines say that the native loop takes new prompts in alone (ENGINE_PROMPT_ALONE). */
const PROMPT_ALONE_NOTE = 'new prompts in a step of their own';
/** How the startup lines say that small decode steps may run as one call per token (ENGINE_DECODE_SPLIT). */
const SPLIT_NOTE = 'small decode steps split where measured faster';
/** How the startup lines say that decode steps of five to seven streams may be padded to eight tokens (ENGINE_DECODE_PAD). */
const PAD_NOTE = `decode steps of 5-7 streams padded to ${PAD_WIDTH} where measured faster`;

/** ENGINE_GAP_FILL's default: one idle slot between busy ones (measured, docs/PERFORMANCE.md). */
const DEFAULT_GAP_FILL = 1;

/** Prompt texts remembered with their tokens, and the longest remembered (≈ 4 MB of text at most). */
const TOKEN_MEMO_ENTRIES = 512;
const TOKEN_MEMO_MAX_CHARS = 8192;

/** Engine settings every model shares (the server's THREAD_POLL, ENGINE_ADDON, ENGINE_ADDON_PATH, ENGINE_LOOP, ENGINE_GAP_FILL). */
export interface EngineOptions {
  readonly threadPoll: number;
  readonly engineAddon: 'auto' | 'off';
  readonly engineAddonPath: string | undefined;
  /** ENGINE_LOOP: steps back to back on the addon's thread, or one call per step. */
  readonly engineLoop: 'native' | 'js';
  /** ENGINE_GAP_FILL: the longest hole of idle slots between busy ones a step fills with throwaway tokens (0 = never). Default 1. */
  readonly engineGapFill?: number;
  /**
   * ENGINE_PROMPT_ALONE: in the native loop, a step that takes a new prompt in leaves the
   * generating slots to the next step. Default `auto`: on where the model runs on the CPU (a
   * decode pass there costs as much as a short prompt's), off on a GPU.
   */
  readonly enginePromptAlone?: 'auto' | 'on' | 'off';
  /**
   * ENGINE_DECODE_SPLIT: the thread policy also measures small decode steps (two to four
   * streams) run as one decode call per token, and uses that where it is faster. Default `auto`:
   * where the model runs on the CPU.
   */
  readonly engineDecodeSplit?: 'auto' | 'on' | 'off';
  /**
   * ENGINE_DECODE_PAD: with eight slots or more, the thread policy also measures decode steps of
   * five to seven streams padded to eight tokens with throwaway ones, and uses that where it is
   * faster. Default `auto`: where the model runs on the CPU.
   */
  readonly engineDecodePad?: 'auto' | 'on' | 'off';
  /**
   * PROMPT_DRAIN_PACK: in the native loop, a step takes every fed prompt the batch holds while
   * two or more wait and the generating slots end within as many steps (the scheduler's
   * drainPack, applied where the loop takes fed prompts in). Default true.
   */
  readonly promptDrainPack?: boolean;
  /** Limits on response_format and tool schemas (SCHEMA_MAX_*). */
  readonly schemaLimits: SchemaLimits;
}

/** Context tokens node-llama-cpp's detokenize looks at (its maxRecentDetokenizerTokens). */
const DETOKENIZE_CONTEXT = 3;

/** KV-cache quantization works in blocks of this many values along a head (llama.cpp's QK8_0 / QK4_0). */
const KV_QUANT_BLOCK = 32;

/**
 * One model, and the only code that touches node-llama-cpp's model and context objects: for a
 * chat model, one context whose sequences are its scheduler's slots (driven through
 * LlamaDecodeRuntime, with the engine addon's persistent threadpool when it can), and a lazily
 * created embedding context; for an embedding or ranking model, that context only. One adapter
 * per loaded model (LoadedModel); the llama.cpp backend is shared (LlamaBackend).
 */
export class LlamaAdapter {
  readonly #logger = new Logger('Inference');
  #lib!: Lib;
  #llama: NodeLlamaCpp.Llama | null = null;
  #model: NodeLlamaCpp.LlamaModel | null = null;
  #context: NodeLlamaCpp.LlamaContext | null = null;
  /** The context's sequences, one per slot, held for its life (see load()). */
  #sequences: NodeLlamaCpp.LlamaContextSequence[] = [];
  #runtime: LlamaDecodeRuntime | null = null;
  /** Set while the addon's threadpool is attached to #context: detached before the context goes. */
  #engineAddon: EngineAddon | null = null;
  /** The addon's detokenizeAfter on #context, while it drives it (see detokenize()). */
  #detokenizeAfter: ((tokens: Int32Array, contextCount: number, count: number, special: boolean) => string | null) | null = null;
  /** Reused for #detokenizeAfter's arguments: no typed array a token. */
  #detokenizeIds = new Int32Array(16);
  /** Threads the generation context was given (the model's threads, THREADS, or the automatic choice). */
  #threads = 1;
  readonly #progressListeners = new Set<(fraction: number) => void>();
  /** Output grammars (structured output, tool calls): see GrammarCompiler. */
  #grammars: GrammarCompiler | null = null;
  /**
   * Tokens of recently seen prompt texts. Clients repeat prompts (retries, cache hits, shared
   * system prompts) and the exact cache's key needs the tokens before it can answer: a cache hit
   * should not pay for the tokenizer. Bounded in entries and in text length.
   */
  readonly #tokenMemo = new LruMap<readonly number[]>(TOKEN_MEMO_ENTRIES);
  #chatWrapper: NodeLlamaCpp.ChatWrapper | null = null;
  #embedding: Promise<NodeLlamaCpp.LlamaEmbeddingContext> | null = null;
  #embedLock: Promise<unknown> = Promise.resolve();
  #ranking: NodeLlamaCpp.LlamaRankingContext | null = null;
  #descriptor: ModelDescriptor | null = null;
  #bosPrepended = false;
  /** The GGUF's token texts (byte-fallback tokens are `<0xNN>`). */
  #vocab: readonly unknown[] | null = null;
  #toolSyntax: ToolCallSyntax | null = null;

  constructor(
    private readonly spec: ModelSpec,
    private readonly engineOptions: EngineOptions,
    private readonly backend: LlamaBackend,
  ) {}

  get isLoaded(): boolean {
    return this.#descriptor !== null;
  }

  /** The loaded backend, for models of their own (the reranker); null before load() and after dispose(). */
  get llama(): NodeLlamaCpp.Llama | null {
    return this.#llama;
  }

  get descriptor(): ModelDescriptor {
    if (!this.#descriptor) throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading');
    return this.#descriptor;
  }

  /** Calls `listener` with the model load's progress (0..1); returns a function that removes it. */
  onLoadProgress(listener: (fraction: number) => void): () => void {
    this.#progressListeners.add(listener);
    return () => this.#progressListeners.delete(listener);
  }

  /**
   * Loads the model on the shared backend and, by kind: a chat model's generation context (its
   * slots) driven by the engine addon, an embedding model's embedding context, a reranker's
   * ranking context. Throws a one-line error for a missing, unreadable or unsupported model.
   */
  async load(): Promise<ModelDescriptor> {
    const started = Date.now();
    const spec = this.spec;
    const modelPath = spec.path;
    if (!existsSync(modelPath) || !statSync(modelPath).isFile()) {
      throw new Error(`Model file not found: ${modelPath}${spec.source === 'MODEL_PATH' ? ' (set MODEL_PATH to a GGUF file)' : ''}`);
    }
    const { lib, llama, probe } = await this.backend.get();
    this.#lib = lib;
    this.#llama = llama;
    let lastLogged = -1;
    try {
      this.#model = await llama.loadModel({
        modelPath,
        gpuLayers: probe.gpu ? (spec.gpuLayers ?? 'auto') : 0,
        onLoadProgress: (progress: number) => {
          const pct = Math.floor(progress * 4) * 25;
          if (pct > lastLogged) {
            lastLogged = pct;
            this.#logger.debug(`Loading model ${spec.id}: ${pct}%`);
          }
          for (const listener of this.#progressListeners) listener(progress);
        },
      });
    } catch (err) {
      throw new Error(`Cannot load model ${modelPath}: ${(err as Error).message}`);
    }
    const model = this.#model;
    try {
      return await this.#prepare(model, probe, started);
    } catch (err) {
      // A model whose context cannot be made is not left half loaded.
      await this.dispose().catch(() => undefined);
      throw err;
    }
  }

  async #prepare(model: NodeLlamaCpp.LlamaModel, probe: GpuProbeResult, started: number): Promise<ModelDescriptor> {
    const spec = this.spec;
    const llama = this.#llama as NodeLlamaCpp.Llama;
    const trainContextSize = model.trainContextSize;
    const tokenList = (model.fileInfo.metadata as unknown as { tokenizer?: { ggml?: { tokens?: readonly unknown[] } } }).tokenizer?.ggml?.tokens;
    this.#vocab = tokenList ?? null;
    this.#bosPrepended = model.tokens.shouldPrependBosToken && model.tokens.bos !== null;
    const tensors = model.fileInfo.fullTensorInfo ?? [];
    const parameters = tensors.length
      ? tensors.reduce((sum, t) => sum + t.dimensions.reduce<number>((a, b) => a * Number(b), 1), 0)
      : null;
    let threads = spec.threads ?? Math.max(1, availableParallelism() - 1);
    let engine: Engine | null = null;
    let engineNote = 'no generation context (embedding or ranking model)';
    let contextSize = Math.min(trainContextSize, AUX_CONTEXT_MAX);
    if (spec.kind === 'chat') {
      contextSize = spec.contextSize ?? Math.min(trainContextSize, 4096);
      this.#checkKvTypes(model);
      const addon = this.engineOptions.engineAddon === 'off' ? null : loadEngineAddon(this.engineOptions.engineAddonPath);
      // With the addon's persistent threadpool every core computes; without it ggml starts fresh
      // threads in every decode call, and one core is best left to Node (docs/PERFORMANCE.md).
      const cores = availableParallelism();
      const fallbackThreads = spec.threads ?? Math.max(1, cores - 1);
      threads = spec.threads ?? (addon?.addon ? cores : fallbackThreads);
      try {
        this.#context = await model.createContext({
          sequences: spec.slots,
          contextSize,
          threads,
          batchSize: spec.batchSize,
          flashAttention: spec.flashAttention === 'auto' ? 'auto' : spec.flashAttention === 'on',
          experimentalKvCacheKeyType: ggmlKvType(spec.kvCacheTypeK),
          experimentalKvCacheValueType: ggmlKvType(spec.kvCacheTypeV),
        });
      } catch (err) {
        throw new Error(`Cannot create the context of model ${spec.id} (${spec.slots} slots x ${contextSize} tokens, KV ${spec.kvCacheTypeK}/${spec.kvCacheTypeV}, flash attention ${spec.flashAttention}): ${(err as Error).message}`);
      }
      const lib = this.#lib;
      const pristineStates = new WeakMap<NodeLlamaCpp.LlamaGrammar, NodeLlamaCpp.LlamaGrammarEvaluationState>();
      // Reserve every sequence id so that nothing else in node-llama-cpp hands one out, and hold
      // the sequence objects as long as the context: node-llama-cpp registers each with a
      // FinalizationRegistry that, once the object is garbage-collected, disposes the sequence,
      // erasing its KV cells. Dropped at once (as before 2026-12-02), they were collected at some
      // major GC under load: every slot then lost its cached prefix (the BOS included) while the
      // scheduler still reused it, and prompts were evaluated without their first tokens (wrong
      // output at temperature 0 for the rest of the process's life; the erase also ran on the
      // main thread while the native loop could be decoding on its own).
      this.#sequences = Array.from({ length: spec.slots }, () => (this.#context as NodeLlamaCpp.LlamaContext).getSequence());
      type Internals = { _ctx: NativeContext; _llama: { _bindings: { AddonSampler: new (m: unknown) => NativeSampler } } };
      type ModelInternals = { _model: unknown };
      const nativeContext = (this.#context as unknown as Internals)._ctx;
      const bindings = (this.#context as unknown as Internals)._llama._bindings;
      const nativeModel = (model as unknown as ModelInternals)._model;
      const eog = [model.tokens.eos, model.tokens.eot].filter((t): t is NodeLlamaCpp.Token => t !== null);
      if (addon === null) {
        engineNote = 'engine addon off (ENGINE_ADDON=off)';
      } else if (addon.addon === null) {
        engineNote = addon.reason;
      } else {
        try {
          addon.addon.probe(nativeContext);
          // Sampling a step's slots in parallel: every core but the step's own thread (at most 16).
          addon.addon.attachThreadpool(nativeContext, threads, this.engineOptions.threadPoll, Math.min(16, cores - 1));
          const onGpu = Boolean(probe.gpu) && model.gpuLayers > 0;
          const splitSetting = this.engineOptions.engineDecodeSplit ?? 'auto';
          const splitDecode = typeof addon.addon.setDecodeSplit === 'function' && (splitSetting === 'on' || (splitSetting === 'auto' && !onGpu));
          // threads set (THREADS or the model's own): exactly that. Unset: up to every core, chosen per step by measurement.
          const fixedThreads = spec.threads !== undefined || threads <= 1;
          const padSetting = this.engineOptions.engineDecodePad ?? 'auto';
          const padDecode =
            typeof addon.addon.setDecodePad === 'function' && spec.slots >= PAD_WIDTH && (padSetting === 'on' || (padSetting === 'auto' && !onGpu));
          const measured = new AdaptiveThreadPolicy(threads, { fixedThreads, splitDecode, padDecode });
          const policy = measured.chooses ? measured : null;
          const nativeLoop = this.engineOptions.engineLoop === 'native' && typeof addon.addon.run === 'function';
          // Process-wide in the addon; every model is given the same server setting.
          const gapFill = typeof addon.addon.setGapFill === 'function' ? this.engineOptions.engineGapFill ?? DEFAULT_GAP_FILL : 0;
          addon.addon.setGapFill?.(gapFill);
          const promptAloneSetting = this.engineOptions.enginePromptAlone ?? 'auto';
          const promptAlone =
            nativeLoop && typeof addon.addon.setPromptAlone === 'function' && (promptAloneSetting === 'on' || (promptAloneSetting === 'auto' && !onGpu));
          addon.addon.setPromptAlone?.(nativeContext, promptAlone);
          const drainPack = nativeLoop && typeof addon.addon.setDrainPack === 'function' && (this.engineOptions.promptDrainPack ?? true);
          addon.addon.setDrainPack?.(nativeContext, drainPack);
          engine = {
            addon: addon.addon,
            maxThreads: threads,
            policy,
            nativeLoop,
            promptAlone,
            drainPack,
            splitDecode: policy !== null && splitDecode,
            padDecode: policy !== null && padDecode,
            gapFill,
          };
          this.#engineAddon = addon.addon;
          const detokenizeAfter = addon.addon.detokenizeAfter?.bind(addon.addon);
          if (detokenizeAfter) this.#detokenizeAfter = (tokens, contextCount, count, special) => detokenizeAfter(nativeContext, tokens, contextCount, count, special);
          engineNote =
            `engine addon: persistent threadpool of ${fixedThreads ? `${threads} threads` : `up to ${threads} threads, chosen per step by measured compute`}` +
            ` (poll ${this.engineOptions.threadPoll}), ${nativeLoop ? 'native step loop' : 'one call per step'}` +
            (gapFill > 0 ? `, holes of up to ${gapFill} idle slot${gapFill === 1 ? '' : 's'} between busy ones filled` : '') +
            (promptAlone ? `, ${PROMPT_ALONE_NOTE}` : '') +
            (engine.splitDecode ? `, ${SPLIT_NOTE}` : '') +
            (engine.padDecode ? `, ${PAD_NOTE}` : '');
        } catch (err) {
          engineNote = `engine addon cannot drive this context: ${(err as Error).message}`;
        }
      }
      if (!engine) {
        if (threads !== fallbackThreads) {
          (nativeContext as unknown as { setThreads(n: number): void }).setThreads(fallbackThreads);
          threads = fallbackThreads;
        }
        if (addon !== null) this.#logger.warn(`${engineNote}; running on node-llama-cpp's own decode path (slower with more than one thread)`);
      }
      this.#runtime = new LlamaDecodeRuntime(
        nativeContext,
        () => new bindings.AddonSampler(nativeModel),
        (grammar) =>
          {
            // Creating an evaluation state parses the grammar text again (ms for a large schema);
            // cloning a pristine one per grammar copies the parsed rules instead.
            const key = grammar as NodeLlamaCpp.LlamaGrammar;
            let pristine = pristineStates.get(key);
            if (!pristine) pristineStates.set(key, (pristine = new lib.LlamaGrammarEvaluationState({ model, grammar: key })));
            return pristine.clone() as unknown as { _state: unknown };
          },
        spec.slots,
        spec.batchSize,
        this.#context.contextSize,
        (token) => model.isEogToken(token as NodeLlamaCpp.Token),
        eog,
        engine,
      );
      contextSize = this.#context.contextSize;
      const template = (model.fileInfo.metadata as { tokenizer?: { chat_template?: unknown } }).tokenizer?.chat_template;
      this.#chatWrapper = typeof template === 'string' && template.length > 0 ? this.#lib.resolveChatWrapper(model) : null;
      this.#toolSyntax = this.#chatWrapper ? this.#wrapperToolSyntax(this.#chatWrapper) : GENERIC_TOOL_SYNTAX;
    } else if (spec.kind === 'embedding') {
      // Created at load, so that its memory is taken now (and counted) and a model that cannot embed fails here.
      this.#embedding = model.createEmbeddingContext({ contextSize, threads: this.#auxThreads });
      try {
        await this.#embedding;
      } catch (err) {
        this.#embedding = null;
        throw new Error(`Cannot create the embedding context of model ${spec.id}: ${(err as Error).message}`);
      }
      this.#toolSyntax = GENERIC_TOOL_SYNTAX;
    } else {
      try {
        this.#ranking = await model.createRankingContext({ contextSize, threads: this.#auxThreads });
      } catch (err) {
        throw new Error(`Cannot create the ranking context of model ${spec.id} (is it a reranker?): ${(err as Error).message}`);
      }
      this.#toolSyntax = GENERIC_TOOL_SYNTAX;
    }
    this.#threads = threads;
    this.#descriptor = {
      id: spec.id,
      kind: spec.kind,
      path: spec.path,
      sizeBytes: statSync(spec.path).size,
      architecture: String(model.fileInfo.metadata.general?.architecture ?? 'unknown'),
      parameters,
      trainContextSize,
      contextSize,
      vocabularySize: tokenList?.length ?? 0,
      embeddingLength: model.embeddingVectorSize,
      layers: model.fileInsights.totalLayers,
      gpu: llama.gpu,
      gpuLayers: model.gpuLayers,
      gpuFallbackReason: probe.fallbackReason,
      slots: spec.kind === 'chat' ? spec.slots : 0,
      threads,
      engine: engine ? 'addon' : 'node-llama-cpp',
      engineNote,
      batchSize: spec.batchSize,
      chatTemplate: this.#chatWrapper ? 'gguf' : 'fallback',
      flashAttention: spec.flashAttention,
      kvCacheTypeK: spec.kvCacheTypeK,
      kvCacheTypeV: spec.kvCacheTypeV,
      loadMs: Date.now() - started,
    };
    const d = this.#descriptor;
    this.#logger.log(
      `Model ${d.id} (${d.kind}) ready in ${d.loadMs} ms: ${d.architecture}, ${(d.sizeBytes / 1e6).toFixed(1)} MB, ` +
        (d.kind === 'chat'
          ? `context ${d.contextSize} x ${d.slots} slots, KV ${d.kvCacheTypeK}/${d.kvCacheTypeV}, flash attention ${d.flashAttention}, ` +
            `${d.threads} threads (${d.engine === 'addon' ? `persistent pool, ${engine?.nativeLoop ? `native step loop${engine.promptAlone ? `, ${PROMPT_ALONE_NOTE}` : ''}` : 'one call per step'}${engine?.splitDecode ? `, ${SPLIT_NOTE}` : ''}${engine?.padDecode ? `, ${PAD_NOTE}` : ''}` : 'per-call threads'}), `
          : `context ${d.contextSize}, `) +
        `${d.gpu ? `${d.gpu} (${d.gpuLayers} layers)` : 'CPU'}`,
    );
    return d;
  }

  /**
   * llama.cpp quantizes the KV cache in blocks of 32 values along each head: a model whose head
   * size is not a multiple of 32 cannot use q8_0 / q4_0 (it fails with a bare "Failed to create
   * context" after three retries). Said plainly instead.
   */
  #checkKvTypes(model: NodeLlamaCpp.LlamaModel): void {
    const quantized = [this.spec.kvCacheTypeK, this.spec.kvCacheTypeV].filter((t) => t !== 'f16');
    if (quantized.length === 0) return;
    const arch = model.fileInfo.architectureMetadata as { embedding_length?: number; attention?: { head_count?: number; key_length?: number; value_length?: number } };
    const heads = arch.attention?.head_count;
    const fallback = arch.embedding_length && heads ? arch.embedding_length / heads : undefined;
    const sizes = { k: arch.attention?.key_length ?? fallback, v: arch.attention?.value_length ?? fallback };
    for (const [side, type] of [['k', this.spec.kvCacheTypeK], ['v', this.spec.kvCacheTypeV]] as const) {
      const size = sizes[side];
      if (type !== 'f16' && size !== undefined && size % KV_QUANT_BLOCK !== 0) {
        throw new Error(
          `kv_cache_type_${side} ${type} needs a head size that is a multiple of ${KV_QUANT_BLOCK}; model ${this.spec.id} has ${size} (use f16 for it)`,
        );
      }
    }
  }

  /** Tokens of `text` as the model sees it, without BOS; `special`: control-token texts (`<s>`, `<|im_end|>`) become those tokens. */
  tokenize(text: string, special = false): number[] {
    const model = this.#requireModel();
    if (special) return model.tokenize(text, true) as number[];
    if (text.length > TOKEN_MEMO_MAX_CHARS) return model.tokenize(text) as number[];
    let tokens = this.#tokenMemo.get(text);
    if (tokens === undefined) {
      tokens = model.tokenize(text) as number[];
      this.#tokenMemo.set(text, tokens);
    }
    // A copy: callers own what they get, the memo stays intact.
    return [...tokens];
  }

  /**
   * Text of `tokens`; `context` (the tokens just before) lets SentencePiece place spaces right.
   * `special`: control tokens as their text (to parse a tool-call syntax that uses them).
   */
  detokenize(tokens: readonly number[], context?: readonly number[], special = false): string {
    // Every streamed token comes here (TokenTextDecoder). node-llama-cpp makes two typed arrays,
    // two native calls and a slice of it; the engine addon makes the same text in one call.
    const after = this.#detokenizeAfter;
    if (after && tokens.length > 0) {
      const recent = context ?? [];
      const before = Math.min(recent.length, DETOKENIZE_CONTEXT);
      const total = before + tokens.length;
      if (this.#detokenizeIds.length < total) this.#detokenizeIds = new Int32Array(Math.max(total, 2 * this.#detokenizeIds.length));
      const ids = this.#detokenizeIds;
      for (let i = 0; i < before; i++) ids[i] = recent[recent.length - before + i];
      for (let i = 0; i < tokens.length; i++) ids[before + i] = tokens[i];
      let text: string | null = null;
      try {
        text = after(ids, before, tokens.length, special);
      } catch {
        // A context the addon no longer reaches (being unloaded): node-llama-cpp answers, or says why.
      }
      if (text !== null) return text;
    }
    return this.#requireModel().detokenize(tokens as NodeLlamaCpp.Token[], special, context as NodeLlamaCpp.Token[] | undefined);
  }

  /** One token's text (after `context`) and its own bytes: a byte-fallback token is that byte. */
  tokenPiece(token: number, context: readonly number[], special = false): { text: string; bytes: number[] } {
    const text = this.detokenize([token], context, special);
    const raw = this.#vocab?.[token];
    const byte = typeof raw === 'string' ? /^<0x([0-9A-Fa-f]{2})>$/.exec(raw) : null;
    return { text, bytes: byte ? [parseInt(byte[1], 16)] : [...Buffer.from(text, 'utf8')] };
  }

  /** The engine the scheduler drives; available once loaded. */
  get runtime(): DecodeRuntime {
    if (!this.#runtime) throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading');
    return this.#runtime;
  }

  /** Prompt tokens as evaluated: BOS first when the model wants it. */
  withBos(tokens: readonly number[]): number[] {
    const bos = this.#requireModel().tokens.bos;
    return this.#bosPrepended && bos !== null && tokens[0] !== bos ? [bos, ...tokens] : [...tokens];
  }

  /** Tokens withBos() adds in front of a prompt (BOS), counted in usage. */
  get promptOverhead(): number {
    return this.#bosPrepended ? 1 : 0;
  }

  /** Renders chat messages (and the tools they may call) with the GGUF's template, or the documented fallback. */
  renderChat(messages: readonly ChatMessage[], tools: readonly ToolDefinition[] = []): RenderedChat {
    const model = this.#requireModel();
    if (!this.#chatWrapper) return this.#renderFallback(messages, tools);
    const history: NodeLlamaCpp.ChatHistoryItem[] = [];
    const calls = new Map<string, NodeLlamaCpp.ChatModelFunctionCall>();
    // After a turn's calls and their results, the model's turn goes on (node-llama-cpp keeps the
    // calls, results and the text after them in one model response).
    let turnOpen = false;
    for (const m of messages) {
      if (m.role === 'user') {
        history.push({ type: 'user', text: m.content });
        turnOpen = false;
      } else if (m.role === 'system' || m.role === 'developer') {
        history.push({ type: 'system', text: m.content });
        turnOpen = false;
      } else if (m.role === 'tool') {
        const call = m.toolCallId === undefined ? undefined : calls.get(m.toolCallId);
        if (call) call.result = parseJsonOr(m.content);
      } else {
        const last = history.at(-1);
        const item: NodeLlamaCpp.ChatModelResponse = turnOpen && last?.type === 'model' ? last : { type: 'model', response: [] };
        if (item !== last) history.push(item);
        if (m.content) item.response.push(m.content);
        for (const [i, c] of (m.toolCalls ?? []).entries()) {
          const call: NodeLlamaCpp.ChatModelFunctionCall = { type: 'functionCall', name: c.name, params: parseJsonOr(c.arguments), result: undefined, startsNewChunk: i === 0 };
          item.response.push(call);
          calls.set(c.id, call);
        }
        turnOpen = (m.toolCalls?.length ?? 0) > 0;
      }
    }
    if (!turnOpen) history.push({ type: 'model', response: [] });
    const availableFunctions = tools.length
      ? Object.fromEntries(tools.map((t) => [t.name, { description: t.description, params: (t.parameters ?? { type: 'object' }) as NodeLlamaCpp.GbnfJsonSchema }]))
      : undefined;
    const state = this.#chatWrapper.generateContextState({ chatHistory: history, availableFunctions, documentFunctionParams: true });
    let tokens = state.contextText.tokenize(model.tokenizer) as number[];
    // BOS is added by withBos() for every prompt; a template that writes it too would double it.
    if (this.#bosPrepended && tokens[0] === model.tokens.bos) tokens = tokens.slice(1);
    const stop = state.stopGenerationTriggers
      .filter((trigger) => trigger.values.every((v) => typeof v === 'string'))
      .map((trigger) => trigger.values.join(''))
      .filter((s) => s.length > 0);
    return { tokens, stop };
  }

  /** How the served model writes function calls (its template's syntax, or the generic one). */
  get toolSyntax(): ToolCallSyntax {
    this.#requireModel();
    return this.#toolSyntax ?? GENERIC_TOOL_SYNTAX;
  }

  /** The documented fallback template (README), tools in the generic syntax. */
  #renderFallback(messages: readonly ChatMessage[], tools: readonly ToolDefinition[]): RenderedChat {
    const t = FALLBACK_CHAT_TEMPLATE;
    const g = GENERIC_TOOL_SYNTAX;
    const parts: string[] = [];
    if (tools.length) {
      parts.push(t.tools(tools.map((tool) => JSON.stringify({ name: tool.name, description: tool.description, parameters: tool.parameters ?? { type: 'object' } }))));
    }
    for (const m of messages) {
      if (m.role === 'user') parts.push(t.user(m.content));
      else if (m.role === 'tool') parts.push(t.tool(m.content));
      else if (m.role === 'assistant') {
        const calls = (m.toolCalls ?? []).map((c) => `${g.prefix}${c.name}${g.paramsPrefix}${c.arguments.trim() || '{}'}${g.suffix}`);
        parts.push(t.assistant([m.content, ...calls].filter(Boolean).join(calls.length ? g.parallel?.betweenCalls ?? '\n' : '')));
      } else parts.push(t.system(m.content));
    }
    return { tokens: this.tokenize(parts.join('') + t.generationPrompt), stop: [...t.stop] };
  }

  /** The chat wrapper's function-call syntax as text; special tokens as their text, cut at an end-of-generation token. */
  #wrapperToolSyntax(wrapper: NodeLlamaCpp.ChatWrapper): ToolCallSyntax {
    const f = wrapper.settings.functions;
    const call = this.#syntaxText(f.call.suffix);
    const parallel = f.parallelism?.call;
    return {
      prefix: this.#syntaxText(f.call.prefix).text,
      paramsPrefix: this.#syntaxText(f.call.paramsPrefix).text,
      suffix: call.text,
      suffixEndsTurn: call.endsTurn,
      optionalPrefixSpace: f.call.optionalPrefixSpace === true,
      parallel: parallel
        ? {
            sectionPrefix: this.#syntaxText(parallel.sectionPrefix).text,
            betweenCalls: this.#syntaxText(parallel.betweenCalls ?? '').text,
            sectionSuffix: this.#syntaxText(parallel.sectionSuffix ?? '').text,
          }
        : null,
      source: wrapper.wrapperName,
    };
  }

  /** LlamaText (or a string) as text, up to its first end-of-generation token. */
  #syntaxText(value: unknown): { text: string; endsTurn: boolean } {
    const lib = this.#lib;
    const model = this.#requireModel();
    const text = lib.LlamaText(value as NodeLlamaCpp.LlamaText);
    let out = '';
    for (const v of text.values) {
      const tokens = typeof v === 'string' ? null : (v.tokenize(model.tokenizer) as number[]);
      if (tokens?.some((token) => model.isEogToken(token as NodeLlamaCpp.Token))) return { text: out, endsTurn: true };
      out += typeof v === 'string' ? v : model.detokenize(tokens as NodeLlamaCpp.Token[], true);
    }
    return { text: out, endsTurn: false };
  }

  /**
   * Compiles an output constraint for SamplingParams.constraint: any JSON object (`json`) or JSON
   * that matches a schema, ending with the value (see json-schema.grammar.ts). Through the
   * GrammarCompiler: SCHEMA_MAX_* limits first (400 `schema_too_complex`), the schema's conversion
   * to GBNF on a worker thread, a size cap before the native parse, a bounded cache.
   */
  grammarFor(format: 'json' | object, param = 'response_format'): Promise<unknown> {
    const compiler = this.#grammarCompiler();
    return format === 'json' ? compiler.compileGbnf(grammarForJsonObject(), param) : compiler.compileSchema(format, param);
  }

  /**
   * A constraint that makes the model call one of `tools` (one or, with `parallel`, several calls).
   * The tools' parameter schemas are held to the same limits as a response_format schema, all of
   * them together (their grammar is built here, on the event loop).
   */
  toolCallGrammar(tools: readonly ToolDefinition[], parallel: boolean): Promise<unknown> {
    const compiler = this.#grammarCompiler();
    compiler.check({ anyOf: tools.map((t) => t.parameters ?? {}) }, 'tools');
    let gbnf: string;
    try {
      gbnf = grammarForToolCalls(this.toolSyntax, tools, parallel);
    } catch (err) {
      throw this.#schemaError(err, 'tools');
    }
    return compiler.compileGbnf(gbnf, 'tools');
  }

  #schemaError(err: unknown, param: string): unknown {
    if (!(err instanceof SchemaGrammarError)) return err;
    return new InferenceException(InferenceErrorCode.UnsupportedSchema, `${param} schema is not supported: ${err.message}`, { param });
  }

  #grammarCompiler(): GrammarCompiler {
    const llama = this.#llama;
    if (!llama) throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading');
    this.#grammars ??= new GrammarCompiler(this.engineOptions.schemaLimits, (grammar) => llama.createGrammar({ grammar }));
    return this.#grammars;
  }

  /**
   * Embeds texts one by one on the model's embedding context: an embedding model's (made at
   * load), or a chat model's own (created on first use).
   */
  embed(texts: readonly (string | readonly number[])[]): Promise<EmbeddingResult> {
    const run = async (): Promise<EmbeddingResult> => {
      const model = this.#requireModel();
      const contextSize = Math.min(model.trainContextSize, AUX_CONTEXT_MAX);
      this.#embedding ??= model.createEmbeddingContext({ contextSize, threads: this.#auxThreads });
      const context = await this.#embedding;
      const bos = model.tokens.shouldPrependBosToken && model.tokens.bos !== null ? 1 : 0;
      const limit = usableEmbeddingTokens(contextSize);
      let promptTokens = 0;
      const vectors: Float32Array[] = [];
      for (const [index, text] of texts.entries()) {
        const count = (typeof text === 'string' ? model.tokenize(text).length : text.length) + bos;
        if (count > limit) {
          throw new InferenceException(
            InferenceErrorCode.EmbeddingInputTooLong,
            `input[${index}] has ${count} tokens; the embedding context holds ${limit}`,
            { param: 'input' },
          );
        }
        promptTokens += count;
        const embedding = await context.getEmbeddingFor(typeof text === 'string' ? text : ([...text] as NodeLlamaCpp.Token[]));
        vectors.push(Float32Array.from(embedding.vector));
      }
      return { vectors, promptTokens };
    };
    const result = this.#embedLock.then(run, run);
    this.#embedLock = result.catch(() => undefined);
    return result;
  }

  /** The model's tokenizer and the most tokens one embedding input may have. */
  embeddingTokenizer(): EmbeddingTokenizer {
    const model = this.#requireModel();
    const bos = model.tokens.shouldPrependBosToken && model.tokens.bos !== null ? 1 : 0;
    return {
      tokenize: (text) => model.tokenize(text) as number[],
      detokenize: (tokens) => model.detokenize(tokens as NodeLlamaCpp.Token[], false),
      maxTokens: usableEmbeddingTokens(Math.min(model.trainContextSize, AUX_CONTEXT_MAX)) - bos,
    };
  }

  /** Relevance of each document to the query (a reranker's scores, 0..1, in the documents' order). */
  rank(query: string, documents: readonly string[]): Promise<number[]> {
    const ranking = this.#ranking;
    if (!ranking) throw new InferenceException(InferenceErrorCode.ModelKindMismatch, `Model ${this.spec.id} is not a reranker`, { param: 'model' });
    const run = (): Promise<number[]> => ranking.rankAll(query, [...documents]);
    const result = this.#embedLock.then(run, run);
    this.#embedLock = result.catch(() => undefined);
    return result;
  }

  /**
   * Frees the model. Order matters: the engine addon's buffers and threadpool go before the
   * context (freeing a context with the pool attached crashes), the context before the model.
   * The shared backend (LlamaBackend) stays.
   */
  async dispose(): Promise<void> {
    const embedding = this.#embedding;
    this.#embedding = null;
    await (await embedding?.catch(() => null))?.dispose();
    const ranking = this.#ranking;
    this.#ranking = null;
    await ranking?.dispose();
    this.#runtime?.dispose();
    this.#runtime = null;
    this.#detokenizeAfter = null;
    if (this.#engineAddon && this.#context) {
      try {
        const native = (this.#context as unknown as { _ctx: object })._ctx;
        this.#engineAddon.release(native);
        this.#engineAddon.detachThreadpool(native);
      } catch (err) {
        this.#logger.warn(`detaching the engine threadpool failed: ${(err as Error).message}`);
      }
      this.#engineAddon = null;
    }
    await this.#context?.dispose();
    await this.#model?.dispose();
    this.#context = this.#model = this.#llama = null;
    this.#sequences = [];
    // Compiled grammars belong to this model's Llama; the worker thread goes with them.
    await this.#grammars?.close();
    this.#grammars = null;
    this.#tokenMemo.clear();
  }

  /** Embedding and ranking contexts have no persistent pool: threads per call, one core left to Node. */
  get #auxThreads(): number {
    return this.spec.threads ?? Math.max(1, availableParallelism() - 1);
  }

  #requireModel(): NodeLlamaCpp.LlamaModel {
    if (!this.#model) throw new InferenceException(InferenceErrorCode.ModelLoading, 'Model is still loading');
    return this.#model;
  }
}

/**
 * Tokens (BOS included) one embedding input may have in a context of `contextSize`:
 * node-llama-cpp refuses an input that fills the context, and may append an end token.
 */
function usableEmbeddingTokens(contextSize: number): number {
  return contextSize - 2;
}

/** A JSON text as its value (tool arguments and results are JSON by convention), else the text itself. */
function parseJsonOr(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
