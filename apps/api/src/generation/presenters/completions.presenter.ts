import type { TextLogprob } from '@app/batching';
import { EncodedFrame } from '../generation.types';
import type { GenerationPresenter, GenerationResult, GenerationStreamEvent, GenerationSummary, SseFrame } from '../generation.types';
import { OpenAIMeta, openaiUsage } from './openai-common';

export interface CompletionsPresenterOptions {
  readonly includeUsage: boolean;
  /** Alternatives per token when logprobs were asked for; undefined: no logprobs. */
  readonly logprobs?: number;
}

/** OpenAI's text_completion (legacy completions), streamed or whole. */
export class CompletionsPresenter implements GenerationPresenter {
  readonly terminator = '[DONE]';
  /** Characters of text so far per choice: text_offset of the next token. */
  readonly #offsets = new Map<number, number>();
  /** A text chunk's JSON around its index and text (what #chunk would serialise), for the common case: no logprobs. */
  readonly #textHead: string;
  readonly #textTail: string;

  constructor(
    private readonly meta: OpenAIMeta,
    private readonly options: CompletionsPresenterOptions,
  ) {
    this.#textHead = `${JSON.stringify({ ...meta, object: 'text_completion' }).slice(0, -1)},"choices":[{"index":`;
    this.#textTail = `,"logprobs":null,"finish_reason":null}]${options.includeUsage ? ',"usage":null' : ''}}`;
  }

  streamEvent(e: GenerationStreamEvent): SseFrame[] {
    if (e.type === 'text' && this.options.logprobs === undefined) {
      // Every streamed token comes here: its chunk is written as text, not built and serialised
      // (text offsets are only kept for logprobs).
      return [new EncodedFrame(`${this.#textHead}${e.choice},"text":${JSON.stringify(e.text)}${this.#textTail}`)];
    }
    if (e.type === 'text') {
      const logprobs = this.#logprobs(e.choice, e.text, e.logprobs ?? []);
      return [this.#chunk(e.choice, e.text, logprobs, null)];
    }
    if (e.type === 'choice-end') return [this.#chunk(e.choice, '', this.options.logprobs !== undefined ? emptyLogprobs() : null, e.finishReason === 'length' ? 'length' : 'stop')];
    return [];
  }

  streamEnd(summary: GenerationSummary): SseFrame[] {
    const frames: SseFrame[] = [];
    if (this.options.includeUsage) frames.push({ data: { ...this.meta, object: 'text_completion', choices: [], usage: openaiUsage(summary.usage) } });
    if (summary.sources) frames.push({ data: { ...this.meta, object: 'text_completion', choices: [], sources: summary.sources } });
    return frames;
  }

  body(r: GenerationResult): object {
    return {
      ...this.meta,
      object: 'text_completion',
      choices: r.choices.map((c) => ({
        index: c.index,
        text: c.text,
        logprobs: this.options.logprobs !== undefined ? this.#whole(c.text, c.logprobs ?? []) : null,
        finish_reason: c.finishReason === 'length' ? 'length' : 'stop',
      })),
      usage: openaiUsage(r.usage),
      ...(r.sources ? { sources: r.sources } : {}),
    };
  }

  /** Logprobs of a chunk, offsets continuing from the choice's earlier text. */
  #logprobs(choice: number, text: string, entries: readonly TextLogprob[]): object | null {
    const start = this.#offsets.get(choice) ?? 0;
    this.#offsets.set(choice, start + text.length);
    if (this.options.logprobs === undefined) return null;
    return this.#shape(entries, start + text.length - entries.reduce((n, e) => n + e.text.length, 0));
  }

  /** Logprobs of a whole answer: its tokens end the text (echoed prompt text comes before them). */
  #whole(text: string, entries: readonly TextLogprob[]): object {
    return this.#shape(entries, text.length - entries.reduce((n, e) => n + e.text.length, 0));
  }

  #shape(entries: readonly TextLogprob[], firstOffset: number): object {
    const top = this.options.logprobs ?? 0;
    let offset = Math.max(0, firstOffset);
    const text_offset: number[] = [];
    for (const e of entries) {
      text_offset.push(offset);
      offset += e.text.length;
    }
    return {
      tokens: entries.map((e) => e.text),
      token_logprobs: entries.map((e) => e.logprob),
      top_logprobs: entries.map((e) => Object.fromEntries(e.top.slice(0, top).map((t) => [t.text, t.logprob]))),
      text_offset,
    };
  }

  #chunk(index: number, text: string, logprobs: object | null, finish: string | null): SseFrame {
    return {
      data: {
        ...this.meta,
        object: 'text_completion',
        choices: [{ index, text, logprobs, finish_reason: finish }],
        ...(this.options.includeUsage ? { usage: null } : {}),
      },
    };
  }
}

function emptyLogprobs(): object {
  return { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
}
