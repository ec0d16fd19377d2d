import type { RenderedError } from '@app/common';
import type { ChoiceFinish, GenerationPresenter, GenerationResult, GenerationStreamEvent, GenerationSummary, SseFrame, TokenUsage } from '../generation.types';

/** Anthropic's error `type` for an HTTP status. */
export function anthropicErrorType(status: number): string {
  if (status === 400 || status === 405 || status === 415 || status === 422) return 'invalid_request_error';
  if (status === 401) return 'authentication_error';
  if (status === 402) return 'billing_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 408 || status === 504) return 'timeout_error';
  if (status === 413) return 'request_too_large';
  if (status === 429) return 'rate_limit_error';
  if (status === 503 || status === 529) return 'overloaded_error';
  return status >= 500 ? 'api_error' : 'invalid_request_error';
}

/** Anthropic's error body: `{"type": "error", "error": {"type", "message"}}`. */
export function anthropicErrorBody(error: RenderedError, requestId?: string): object {
  return { type: 'error', error: { type: anthropicErrorType(error.status), message: error.body.error.message }, ...(requestId ? { request_id: requestId } : {}) };
}

export interface AnthropicPresenterOptions {
  readonly id: string;
  readonly model: string;
  /** The request's stop_sequences: only these are reported as `stop_sequence` (a template's own stop string is `end_turn`). */
  readonly stopSequences: readonly string[];
}

type Block = Record<string, unknown>;

/** Anthropic's usage: input tokens not served from a KV cache, those that were (cache reads), output tokens. */
function usageOf(u: TokenUsage): object {
  return {
    input_tokens: u.promptTokens - u.cachedPromptTokens,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: u.cachedPromptTokens,
    output_tokens: u.completionTokens,
    service_tier: 'standard',
  };
}

/** A tool call's arguments as Anthropic's `input` object (arguments that are not JSON stay the text they are). */
export function toolInput(args: string): unknown {
  try {
    return JSON.parse(args);
  } catch {
    return args;
  }
}

/**
 * Anthropic's Messages API: a `message` whose `content` holds a `text` block and/or `tool_use`
 * blocks, with `stop_reason` (`end_turn`, `max_tokens`, `stop_sequence`, `tool_use`) and usage;
 * streamed, Anthropic's events (`message_start`, `ping`, `content_block_start`,
 * `content_block_delta` with `text_delta` or `input_json_delta`, `content_block_stop`,
 * `message_delta`, `message_stop`) with their type as the SSE event name.
 */
export class AnthropicPresenter implements GenerationPresenter {
  #started = false;
  #index = -1;
  #open: 'text' | 'tool_use' | null = null;
  #held = '';
  #calls = 0;
  #blocks = 0;
  #end: { finish: ChoiceFinish; stopSequence?: string } = { finish: 'stop' };
  /** Prompt tokens, known once the prompt is prepared (message_start carries them). */
  promptTokens = 0;

  constructor(private readonly options: AnthropicPresenterOptions) {}

  streamEvent(e: GenerationStreamEvent): SseFrame[] {
    const frames: SseFrame[] = [];
    if (!this.#started) {
      this.#started = true;
      frames.push(
        frame('message_start', {
          message: {
            id: this.options.id,
            type: 'message',
            role: 'assistant',
            content: [],
            model: this.options.model,
            stop_reason: null,
            stop_sequence: null,
            usage: { input_tokens: this.promptTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 0, service_tier: 'standard' },
          },
        }),
        frame('ping', {}),
      );
    }
    switch (e.type) {
      case 'text':
        if (this.#open === 'tool_use') this.#close(frames);
        if (!this.#open) {
          // Whitespace before a call is dropped (the body's rule); it opens a block only once text follows.
          if (!(this.#held + e.text).trim()) {
            this.#held += e.text;
            break;
          }
          this.#start(frames, 'text', { type: 'text', text: '' });
        }
        frames.push(frame('content_block_delta', { index: this.#index, delta: { type: 'text_delta', text: this.#held + e.text } }));
        this.#held = '';
        break;
      case 'tool-call':
        this.#close(frames);
        this.#held = '';
        this.#calls++;
        this.#start(frames, 'tool_use', { type: 'tool_use', id: toolUseId(e.id), name: e.name, input: {} });
        break;
      case 'tool-arguments':
        if (this.#open === 'tool_use') frames.push(frame('content_block_delta', { index: this.#index, delta: { type: 'input_json_delta', partial_json: e.delta } }));
        break;
      case 'choice-end':
        this.#end = { finish: e.finishReason, stopSequence: e.stopSequence };
        if (!this.#open && this.#calls === 0 && this.#held) {
          this.#start(frames, 'text', { type: 'text', text: '' });
          frames.push(frame('content_block_delta', { index: this.#index, delta: { type: 'text_delta', text: this.#held } }));
        }
        this.#close(frames);
        break;
    }
    return frames;
  }

  streamEnd(summary: GenerationSummary): SseFrame[] {
    const { stop_reason, stop_sequence } = this.#stop(this.#end.finish, this.#end.stopSequence);
    return [
      frame('message_delta', {
        delta: { stop_reason, stop_sequence },
        usage: { output_tokens: summary.usage.completionTokens, input_tokens: summary.usage.promptTokens - summary.usage.cachedPromptTokens, cache_read_input_tokens: summary.usage.cachedPromptTokens },
      }),
      frame('message_stop', {}),
    ];
  }

  streamError(error: RenderedError): SseFrame {
    return { event: 'error', data: anthropicErrorBody(error) };
  }

  body(r: GenerationResult): object {
    const c = r.choices[0];
    const content: Block[] = [];
    if (c && (c.text.trim() || (c.toolCalls.length === 0 && c.text))) content.push({ type: 'text', text: c.text });
    for (const call of c?.toolCalls ?? []) content.push({ type: 'tool_use', id: toolUseId(call.id), name: call.name, input: toolInput(call.arguments) });
    return {
      id: this.options.id,
      type: 'message',
      role: 'assistant',
      model: this.options.model,
      content,
      ...this.#stop(c?.finishReason ?? 'stop', c?.stopSequence),
      usage: usageOf(r.usage),
      ...(r.sources ? { sources: r.sources } : {}),
    };
  }

  #stop(finish: ChoiceFinish, stopSequence: string | undefined): { stop_reason: string; stop_sequence: string | null } {
    if (finish === 'tool_calls') return { stop_reason: 'tool_use', stop_sequence: null };
    if (finish === 'length') return { stop_reason: 'max_tokens', stop_sequence: null };
    if (stopSequence !== undefined && this.options.stopSequences.includes(stopSequence)) return { stop_reason: 'stop_sequence', stop_sequence: stopSequence };
    return { stop_reason: 'end_turn', stop_sequence: null };
  }

  #start(frames: SseFrame[], kind: 'text' | 'tool_use', block: Block): void {
    this.#open = kind;
    this.#index = this.#blocks++;
    frames.push(frame('content_block_start', { index: this.#index, content_block: block }));
  }

  #close(frames: SseFrame[]): void {
    if (!this.#open) return;
    this.#open = null;
    frames.push(frame('content_block_stop', { index: this.#index }));
  }
}

/** Anthropic's tool_use ids are `toolu_…`; the pipeline's call ids are `call_…`. */
function toolUseId(callId: string): string {
  return callId.startsWith('call_') ? `toolu_${callId.slice(5)}` : callId;
}

function frame(type: string, fields: object): SseFrame {
  return { event: type, data: { type, ...fields } };
}
