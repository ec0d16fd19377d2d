import type { TextLogprob } from '@app/batching';
import type { RenderedError } from '@app/common';
import type { ChoiceResult, GenerationPresenter, GenerationResult, GenerationStreamEvent, GenerationSummary, SseFrame, TokenUsage } from '../generation.types';

/** The request as a response echoes it (OpenAI's Response object repeats its parameters). */
export interface ResponseEcho {
  readonly id: string;
  readonly created_at: number;
  readonly model: string;
  readonly instructions: string | null;
  readonly max_output_tokens: number | null;
  readonly metadata: Record<string, string>;
  readonly parallel_tool_calls: boolean;
  readonly previous_response_id: string | null;
  readonly store: boolean;
  readonly temperature: number;
  readonly text: object;
  readonly tool_choice: unknown;
  readonly tools: readonly object[];
  readonly top_logprobs: number;
  readonly top_p: number;
  readonly truncation: 'disabled';
  readonly user: string | null;
}

export interface ResponsesPresenterOptions {
  /** Alternatives per token when logprobs were asked for (include message.output_text.logprobs); undefined: none. */
  readonly topLogprobs?: number;
}

type Item = Record<string, unknown>;

/** Responses API usage: input tokens (those a KV cache held, as cached), output tokens. */
function usageOf(u: TokenUsage): object {
  return {
    input_tokens: u.promptTokens,
    input_tokens_details: { cached_tokens: u.cachedPromptTokens },
    output_tokens: u.completionTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: u.promptTokens + u.completionTokens,
  };
}

/**
 * OpenAI's Responses API: a `response` object whose `output` holds a `message` item (one
 * `output_text` part) and/or `function_call` items; streamed, the Responses event sequence
 * (`response.created`, `response.in_progress`, `response.output_item.added`,
 * `response.content_part.added`, `response.output_text.delta`/`.done`,
 * `response.function_call_arguments.delta`/`.done`, `response.output_item.done`, then
 * `response.completed` or, when max_output_tokens cut it, `response.incomplete`), each with its
 * `sequence_number` and its type as the SSE event name. The final response (streamed or not) is
 * `response` after the call, for the service to store.
 */
export class ResponsesPresenter implements GenerationPresenter {
  #sequence = 0;
  #started = false;
  readonly #output: Item[] = [];
  /** The item being streamed: its index in output and what it has so far. */
  #open: { index: number; item: Item; text: string; logprobs: object[] } | null = null;
  /** Whitespace held back until it is known whether a message follows (a call drops it, like the body). */
  #held = '';
  #heldLogprobs: readonly TextLogprob[] = [];
  #calls = 0;
  #finish: ChoiceResult['finishReason'] = 'stop';
  /** The final response object, once rendered. */
  response: Record<string, unknown> | null = null;

  constructor(
    private readonly echo: ResponseEcho,
    private readonly options: ResponsesPresenterOptions,
  ) {}

  streamEvent(e: GenerationStreamEvent): SseFrame[] {
    const frames: SseFrame[] = [];
    if (!this.#started) {
      this.#started = true;
      const snapshot = this.#response('in_progress', [], null);
      frames.push(this.#frame('response.created', { response: snapshot }), this.#frame('response.in_progress', { response: snapshot }));
    }
    switch (e.type) {
      case 'text': {
        if (this.#open?.item.type === 'function_call') this.#close(frames);
        if (!this.#open) {
          if (!(this.#held + e.text).trim()) {
            this.#held += e.text;
            this.#heldLogprobs = [...this.#heldLogprobs, ...(e.logprobs ?? [])];
            break;
          }
          this.#openMessage(frames);
        }
        const text = this.#held + e.text;
        const logprobs = this.#logprobs([...this.#heldLogprobs, ...(e.logprobs ?? [])]);
        this.#held = '';
        this.#heldLogprobs = [];
        this.#delta(frames, text, logprobs);
        break;
      }
      case 'tool-call': {
        this.#close(frames);
        this.#held = '';
        this.#heldLogprobs = [];
        this.#calls++;
        const item: Item = { type: 'function_call', id: `fc_${this.echo.id.slice(5)}_${this.#output.length}`, call_id: e.id, name: e.name, arguments: '', status: 'in_progress' };
        this.#open = { index: this.#output.length, item, text: '', logprobs: [] };
        this.#output.push(item);
        frames.push(this.#frame('response.output_item.added', { output_index: this.#open.index, item: { ...item } }));
        break;
      }
      case 'tool-arguments':
        if (this.#open?.item.type === 'function_call') {
          this.#open.text += e.delta;
          frames.push(this.#frame('response.function_call_arguments.delta', { item_id: this.#open.item.id, output_index: this.#open.index, delta: e.delta }));
        }
        break;
      case 'choice-end': {
        this.#finish = e.finishReason;
        // An answer with no call is one message, even an empty one (the body's rule).
        if (!this.#open && this.#calls === 0 && !this.#output.some((o) => o.type === 'message')) {
          this.#openMessage(frames);
          if (this.#held) this.#delta(frames, this.#held, this.#logprobs(this.#heldLogprobs));
        }
        this.#close(frames);
        break;
      }
    }
    return frames;
  }

  streamEnd(summary: GenerationSummary): SseFrame[] {
    const status = this.#finish === 'length' ? 'incomplete' : 'completed';
    this.response = this.#response(status, this.#output, summary);
    return [this.#frame(status === 'completed' ? 'response.completed' : 'response.incomplete', { response: this.response })];
  }

  /** OpenAI's stream error event: `{type: "error", code, message, param, sequence_number}`. */
  streamError(error: RenderedError): SseFrame {
    const { code, message, param } = error.body.error;
    return this.#frame('error', { code, message, param: param ?? null });
  }

  body(r: GenerationResult): object {
    const c = r.choices[0];
    const output: Item[] = [];
    if (c && (c.text.trim() || c.toolCalls.length === 0)) {
      output.push({
        type: 'message',
        id: `msg_${this.echo.id.slice(5)}_0`,
        status: c.finishReason === 'length' && c.toolCalls.length === 0 ? 'incomplete' : 'completed',
        role: 'assistant',
        content: [{ type: 'output_text', text: c.text, annotations: [], logprobs: this.#logprobs(c.logprobs ?? []) }],
      });
    }
    for (const [i, call] of (c?.toolCalls ?? []).entries()) {
      const cut = c?.finishReason === 'length' && i === (c?.toolCalls.length ?? 0) - 1;
      output.push({ type: 'function_call', id: `fc_${this.echo.id.slice(5)}_${output.length}`, call_id: call.id, name: call.name, arguments: call.arguments, status: cut ? 'incomplete' : 'completed' });
    }
    this.#finish = c?.finishReason ?? 'stop';
    this.response = this.#response(this.#finish === 'length' ? 'incomplete' : 'completed', output, r);
    return this.response;
  }

  #openMessage(frames: SseFrame[]): void {
    const item: Item = { type: 'message', id: `msg_${this.echo.id.slice(5)}_${this.#output.length}`, status: 'in_progress', role: 'assistant', content: [] };
    this.#open = { index: this.#output.length, item, text: '', logprobs: [] };
    this.#output.push(item);
    frames.push(this.#frame('response.output_item.added', { output_index: this.#open.index, item: { ...item, content: [] } }));
    frames.push(
      this.#frame('response.content_part.added', { item_id: item.id, output_index: this.#open.index, content_index: 0, part: { type: 'output_text', text: '', annotations: [], logprobs: [] } }),
    );
  }

  #delta(frames: SseFrame[], text: string, logprobs: object[]): void {
    const open = this.#open!;
    open.text += text;
    open.logprobs.push(...logprobs);
    frames.push(this.#frame('response.output_text.delta', { item_id: open.item.id, output_index: open.index, content_index: 0, delta: text, logprobs }));
  }

  /** Ends the open item: its `.done` events, and the finished item in output. */
  #close(frames: SseFrame[]): void {
    const open = this.#open;
    if (!open) return;
    this.#open = null;
    const base = { item_id: open.item.id, output_index: open.index };
    let done: Item;
    if (open.item.type === 'message') {
      const part = { type: 'output_text', text: open.text, annotations: [], logprobs: open.logprobs };
      frames.push(this.#frame('response.output_text.done', { ...base, content_index: 0, text: open.text, logprobs: open.logprobs }));
      frames.push(this.#frame('response.content_part.done', { ...base, content_index: 0, part }));
      // The message max_output_tokens cut short is `incomplete`, like OpenAI's.
      done = { ...open.item, status: this.#finish === 'length' ? 'incomplete' : 'completed', content: [part] };
    } else {
      const args = open.text.trim() || '{}';
      frames.push(this.#frame('response.function_call_arguments.done', { ...base, name: open.item.name, arguments: args }));
      // A call still open when max_output_tokens cut the answer is `incomplete` (its arguments may be cut too).
      done = { ...open.item, arguments: args, status: this.#finish === 'length' ? 'incomplete' : 'completed' };
    }
    this.#output[open.index] = done;
    frames.push(this.#frame('response.output_item.done', { output_index: open.index, item: done }));
  }

  #logprobs(entries: readonly TextLogprob[]): object[] {
    const top = this.options.topLogprobs;
    if (top === undefined) return [];
    return entries.map((e) => ({
      token: e.text,
      logprob: e.logprob,
      bytes: [...e.bytes],
      top_logprobs: e.top.slice(0, top).map((t) => ({ token: t.text, logprob: t.logprob, bytes: [...t.bytes] })),
    }));
  }

  #response(status: 'in_progress' | 'completed' | 'incomplete', output: readonly Item[], summary: GenerationSummary | null): Record<string, unknown> {
    return {
      id: this.echo.id,
      object: 'response',
      created_at: this.echo.created_at,
      status,
      background: false,
      completed_at: status === 'in_progress' ? null : Math.floor(Date.now() / 1000),
      error: null,
      incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
      instructions: this.echo.instructions,
      max_output_tokens: this.echo.max_output_tokens,
      max_tool_calls: null,
      model: this.echo.model,
      output: [...output],
      parallel_tool_calls: this.echo.parallel_tool_calls,
      previous_response_id: this.echo.previous_response_id,
      reasoning: { effort: null, summary: null },
      service_tier: 'default',
      store: this.echo.store,
      temperature: this.echo.temperature,
      text: this.echo.text,
      tool_choice: this.echo.tool_choice,
      tools: this.echo.tools,
      top_logprobs: this.echo.top_logprobs,
      top_p: this.echo.top_p,
      truncation: this.echo.truncation,
      usage: summary ? usageOf(summary.usage) : null,
      user: this.echo.user,
      metadata: this.echo.metadata,
      ...(summary?.sources ? { sources: summary.sources } : {}),
    };
  }

  #frame(type: string, fields: object): SseFrame {
    return { event: type, data: { type, ...fields, sequence_number: this.#sequence++ } };
  }
}
