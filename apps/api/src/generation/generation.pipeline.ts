import { Injectable } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { Principal } from '@app/auth';
import { InputGuardService, Reply } from '@app/common';
import { TextLogprob } from '@app/batching';
import { CacheDirectives, CompletionEvent, ResponseCacheService } from '@app/caching';
import { GenerationRequest, RerankerService, ToolCallParser, ToolParseEvent } from '@app/inference';
import { RetrievalService } from '@app/retrieval';
import { cacheableRequest } from '../cache/cacheable';
import { retrieveFor } from '../retrieval/context.assembly';
import { UsageMeterService } from '../usage/usage-meter.service';
import {
  ChoiceFinish,
  ChoiceResult,
  GenerationInput,
  GenerationPresenter,
  GenerationResult,
  GenerationStreamEvent,
  GenerationSummary,
  PreparedGeneration,
  TokenUsage,
} from './generation.types';

/** Per-request context the routes pass through. */
export interface GenerationContext {
  readonly directives: CacheDirectives;
  readonly signal: AbortSignal;
  readonly caller?: Principal;
  readonly stream: boolean;
}

/**
 * The generation flow, written once for every wire format: input guard → retrieval → prompt
 * preparation (the format's own, on the request's model) → per choice: response cache (scoped
 * by that model) → usage meter → scheduled generation on that model's slots → tool-call parsing; choices run concurrently and their events are merged. The
 * presenter turns the events into the format's JSON body or SSE frames.
 */
@Injectable()
export class GenerationPipeline {
  constructor(
    private readonly cache: ResponseCacheService,
    private readonly usage: UsageMeterService,
    private readonly retrieval: RetrievalService,
    private readonly guard: InputGuardService,
    private readonly reranker: RerankerService,
  ) {}

  async run(input: GenerationInput, context: GenerationContext, presenter: GenerationPresenter): Promise<Reply> {
    this.guard.check(input.guard);
    const retrieved = input.retrieval ? await retrieveFor(this.retrieval, input.retrieval.option, input.retrieval.query, this.reranker, context.caller) : null;
    const prepared = { ...(await input.prepare(retrieved)), retrievedContext: retrieved?.context };
    const sources = retrieved?.sources;
    const runs = await this.#start(input, prepared, context);
    const headers = runs[0]?.headers ?? {};
    const events = merge(runs.map((r) => r.events));
    if (context.stream) {
      return {
        kind: 'sse',
        terminator: presenter.terminator,
        headers,
        named: true,
        errorEvent: presenter.streamError?.bind(presenter),
        events: (async function* () {
          const ends: Extract<GenerationStreamEvent, { type: 'choice-end' }>[] = [];
          for await (const event of events) {
            if (event.type === 'choice-end') ends.push(event);
            // A loop, not yield*: an async generator delegating to a sync iterable (the frames)
            // wraps and awaits each value once more, on every token.
            for (const frame of presenter.streamEvent(event)) yield frame;
          }
          yield* presenter.streamEnd(summarize(prepared, ends, sources));
        })(),
      };
    }
    const choices = new Map<number, { text: string; calls: { id: string; name: string; arguments: string }[]; logprobs?: TextLogprob[]; end?: Extract<GenerationStreamEvent, { type: 'choice-end' }> }>();
    for await (const event of events) {
      let c = choices.get(event.choice);
      if (!c) choices.set(event.choice, (c = { text: '', calls: [] }));
      if (event.type === 'text') {
        c.text += event.text;
        if (event.logprobs) (c.logprobs ??= []).push(...event.logprobs);
      } else if (event.type === 'tool-call') c.calls[event.index] = { id: event.id, name: event.name, arguments: '' };
      else if (event.type === 'tool-arguments') c.calls[event.index].arguments += event.delta;
      else c.end = event;
    }
    const logprobs = prepared.sampling.logprobs !== undefined;
    const results: ChoiceResult[] = [...choices.entries()]
      .sort(([a], [b]) => a - b)
      .map(([index, c]) => ({
        index,
        text: c.text,
        toolCalls: c.calls.map((call) => ({ ...call, arguments: call.arguments.trim() || '{}' })),
        finishReason: c.end?.finishReason ?? 'stop',
        ...(c.end?.stopSequence === undefined ? {} : { stopSequence: c.end.stopSequence }),
        ...(logprobs ? { logprobs: c.logprobs ?? [] } : {}),
        usage: c.end?.usage ?? { promptTokens: 0, completionTokens: 0, cachedPromptTokens: 0 },
      }));
    const result: GenerationResult = { choices: results, ...summarize(prepared, results.map((r) => ({ choice: r.index, usage: r.usage })), sources) };
    return { kind: 'json', headers, body: presenter.body(result) };
  }

  /** Starts every choice (lazily: nothing runs until iterated) through the caches. */
  async #start(input: GenerationInput, p: PreparedGeneration, context: GenerationContext): Promise<{ headers: Record<string, string>; events: AsyncIterable<GenerationStreamEvent> }[]> {
    const { family } = input;
    const model = input.model.handle;
    const n = p.n ?? 1;
    const runs: { headers: Record<string, string>; events: AsyncIterable<GenerationStreamEvent> }[] = [];
    // A cached answer carries no log-probabilities: such requests are answered by the model.
    const directives = p.sampling.logprobs !== undefined ? { ...context.directives, noCache: true } : context.directives;
    for (const [promptIndex, prompt] of p.prompts.entries()) {
      for (let j = 0; j < n; j++) {
        const index = promptIndex * n + j;
        const seed = p.sampling.seed === undefined ? undefined : (p.sampling.seed + j) % 2 ** 32;
        const request: GenerationRequest = {
          prompt: prompt.prompt,
          sampling: { ...p.sampling, seed },
          stop: p.stop,
          specialTokens: p.toolSyntax !== undefined,
        };
        const cacheable = cacheableRequest(family, request, prompt.cacheText, p.requestedMaxTokens, p.format, p.retrievedContext, { id: model.id, path: model.descriptor.path });
        const run = await this.cache.run(cacheable, directives, () =>
          this.usage.meter(model.generate(request, this.usage.submitOptions(context.caller, context.signal)), context.caller, prompt.prompt.promptTokens, prompt.prompt.maxTokens, {
            id: model.id,
            limits: input.model.limits,
          }),
        );
        runs.push({ headers: run.headers, events: choiceEvents(index, run.events, prompt.echo, p.toolSyntax ? new ToolCallParser(p.toolSyntax) : null) });
      }
    }
    return runs;
  }
}

/** One choice's cache/model events as stream events: echo first, tool calls parsed out. */
async function* choiceEvents(
  choice: number,
  events: AsyncIterable<CompletionEvent>,
  echo: string | undefined,
  parser: ToolCallParser | null,
): AsyncGenerator<GenerationStreamEvent> {
  if (echo) yield { type: 'text', choice, text: echo };
  const ids: string[] = [];
  const convert = function* (parsed: ToolParseEvent[], logprobs?: readonly TextLogprob[]): Generator<GenerationStreamEvent> {
    let carried = logprobs;
    for (const e of parsed) {
      if (e.type === 'text') {
        // Log-probabilities ride on the content they produced; tokens that became a call have none.
        yield carried ? { type: 'text', choice, text: e.text, logprobs: carried } : { type: 'text', choice, text: e.text };
        carried = undefined;
      } else if (e.type === 'call-start') {
        ids[e.index] = `call_${randomBytes(12).toString('hex')}`;
        yield { type: 'tool-call', choice, index: e.index, id: ids[e.index], name: e.name };
      } else if (e.type === 'call-arguments') yield { type: 'tool-arguments', choice, index: e.index, delta: e.delta };
    }
  };
  for await (const event of events) {
    if (event.kind === 'text') {
      const logprobs = (event as { logprobs?: readonly TextLogprob[] }).logprobs;
      if (!parser) yield logprobs ? { type: 'text', choice, text: event.text, logprobs } : { type: 'text', choice, text: event.text };
      else for (const e of convert(parser.push(event.text), logprobs)) yield e;
    } else {
      if (parser) for (const e of convert(parser.flush())) yield e;
      const called = (parser?.calls ?? 0) > 0;
      const finishReason: ChoiceFinish = event.finishReason === 'length' ? 'length' : called ? 'tool_calls' : 'stop';
      yield {
        type: 'choice-end',
        choice,
        finishReason,
        usage: { promptTokens: event.promptTokens, completionTokens: event.completionTokens, cachedPromptTokens: event.cachedPromptTokens },
        ...(event.stopSequence === undefined ? {} : { stopSequence: event.stopSequence }),
      };
    }
  }
}

/** Totals: each prompt's tokens once (its first choice's), every choice's completion tokens. */
function summarize(p: PreparedGeneration, ends: readonly { choice: number; usage: TokenUsage }[], sources: GenerationSummary['sources']): GenerationSummary {
  const n = p.n ?? 1;
  let promptTokens = 0;
  let completionTokens = 0;
  let cachedPromptTokens = 0;
  for (const e of ends) {
    completionTokens += e.usage.completionTokens;
    if (e.choice % n === 0) {
      promptTokens += e.usage.promptTokens;
      cachedPromptTokens += e.usage.cachedPromptTokens;
    }
  }
  return { usage: { promptTokens, completionTokens, cachedPromptTokens }, ...(sources ? { sources } : {}) };
}

/**
 * Merges the choices' event streams as events arrive; all of them start at once, so choices of
 * one prompt reach the scheduler together (the prompt is evaluated once and its KV copied). An
 * error in one ends the whole stream; leaving early stops every choice.
 */
function merge<T>(streams: readonly AsyncIterable<T>[]): AsyncIterable<T> {
  // One choice (nearly every request): its own stream, not one more generator every token passes.
  return streams.length === 1 ? streams[0] : mergeMany(streams);
}

async function* mergeMany<T>(streams: readonly AsyncIterable<T>[]): AsyncGenerator<T> {
  const iterators = streams.map((s) => s[Symbol.asyncIterator]());
  const pending = new Map<number, Promise<{ i: number; r: IteratorResult<T> }>>();
  const pull = (i: number): void => {
    const next = iterators[i].next().then((r) => ({ i, r }));
    // A choice left behind when another failed must not reject unobserved.
    next.catch(() => undefined);
    pending.set(i, next);
  };
  iterators.forEach((_, i) => pull(i));
  try {
    while (pending.size > 0) {
      const { i, r } = await Promise.race(pending.values());
      if (r.done) {
        pending.delete(i);
        continue;
      }
      pull(i);
      yield r.value;
    }
  } finally {
    // Stopped early (client gone, an error): let every choice go, its slot freed.
    await Promise.allSettled(iterators.map((it, i) => (pending.has(i) ? it.return?.() : undefined)));
  }
}

