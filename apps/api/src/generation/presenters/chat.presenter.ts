import { EncodedFrame } from '../generation.types';
import type { GenerationPresenter, GenerationResult, GenerationStreamEvent, GenerationSummary, SseFrame } from '../generation.types';
import { chatLogprobs, OpenAIMeta, openaiUsage } from './openai-common';

export interface ChatPresenterOptions {
  readonly includeUsage: boolean;
  /** Alternatives per token when logprobs were asked for; undefined: no logprobs. */
  readonly topLogprobs?: number;
  /** The request used the legacy `functions`: answer with `function_call`, not `tool_calls`. */
  readonly legacyFunctions: boolean;
}

/** OpenAI's chat.completion and chat.completion.chunk. */
export class ChatPresenter implements GenerationPresenter {
  readonly terminator = '[DONE]';
  readonly #started = new Set<number>();
  /** A content chunk's JSON around its index and text (what #chunk would serialise), for the common case: no role, no logprobs. */
  readonly #textHead: string;
  readonly #textTail: string;

  constructor(
    private readonly meta: OpenAIMeta,
    private readonly options: ChatPresenterOptions,
  ) {
    this.#textHead = `${JSON.stringify(this.#base()).slice(0, -1)},"choices":[{"index":`;
    this.#textTail = `},"logprobs":null,"finish_reason":null}]${options.includeUsage ? ',"usage":null' : ''}}`;
  }

  streamEvent(e: GenerationStreamEvent): SseFrame[] {
    if (e.type === 'text' && this.options.topLogprobs === undefined && this.#started.has(e.choice)) {
      // Every streamed token after the first comes here: its chunk is written as text, not built and serialised.
      return [new EncodedFrame(`${this.#textHead}${e.choice},"delta":{"content":${JSON.stringify(e.text)}${this.#textTail}`)];
    }
    const first = !this.#started.has(e.choice);
    this.#started.add(e.choice);
    const role = first ? { role: 'assistant' } : {};
    const legacy = this.options.legacyFunctions;
    switch (e.type) {
      case 'text': {
        const logprobs = this.options.topLogprobs !== undefined ? { content: chatLogprobs(e.logprobs ?? [], this.options.topLogprobs), refusal: null } : null;
        return [this.#chunk(e.choice, { ...role, content: e.text }, null, logprobs)];
      }
      case 'tool-call':
        return [
          this.#chunk(
            e.choice,
            legacy
              ? { ...role, content: null, function_call: { name: e.name, arguments: '' } }
              : { ...role, ...(first ? { content: null } : {}), tool_calls: [{ index: e.index, id: e.id, type: 'function', function: { name: e.name, arguments: '' } }] },
            null,
          ),
        ];
      case 'tool-arguments':
        return [this.#chunk(e.choice, legacy ? { function_call: { arguments: e.delta } } : { tool_calls: [{ index: e.index, function: { arguments: e.delta } }] }, null)];
      case 'choice-end': {
        const finish = legacy && e.finishReason === 'tool_calls' ? 'function_call' : e.finishReason;
        return [this.#chunk(e.choice, first ? { role: 'assistant', content: '' } : {}, finish)];
      }
    }
  }

  streamEnd(summary: GenerationSummary): SseFrame[] {
    const frames: SseFrame[] = [];
    if (this.options.includeUsage) frames.push({ data: { ...this.#base(), choices: [], usage: openaiUsage(summary.usage) } });
    // Shaped like the usage chunk (no choices), so SDK stream readers pass over it.
    if (summary.sources) frames.push({ data: { ...this.#base(), choices: [], sources: summary.sources } });
    return frames;
  }

  body(r: GenerationResult): object {
    return {
      ...this.meta,
      object: 'chat.completion',
      system_fingerprint: null,
      choices: r.choices.map((c) => {
        const calls = c.toolCalls.map((t) => ({ id: t.id, type: 'function', function: { name: t.name, arguments: t.arguments } }));
        const legacy = this.options.legacyFunctions && calls.length > 0;
        const message = {
          role: 'assistant',
          content: calls.length && !c.text.trim() ? null : c.text,
          refusal: null,
          ...(calls.length && !legacy ? { tool_calls: calls } : {}),
          ...(legacy ? { function_call: calls[0].function } : {}),
        };
        return {
          index: c.index,
          message,
          logprobs: this.options.topLogprobs !== undefined ? { content: chatLogprobs(c.logprobs ?? [], this.options.topLogprobs), refusal: null } : null,
          finish_reason: legacy && c.finishReason === 'tool_calls' ? 'function_call' : c.finishReason,
        };
      }),
      usage: openaiUsage(r.usage),
      ...(r.sources ? { sources: r.sources } : {}),
    };
  }

  #base(): object {
    return { ...this.meta, object: 'chat.completion.chunk', system_fingerprint: null };
  }

  #chunk(index: number, delta: object, finish: string | null, logprobs: object | null = null): SseFrame {
    return {
      data: {
        ...this.#base(),
        choices: [{ index, delta, logprobs, finish_reason: finish }],
        ...(this.options.includeUsage ? { usage: null } : {}),
      },
    };
  }
}
