import type { GenerationPresenter, GenerationResult, GenerationStreamEvent, GenerationSummary, SseFrame, TokenUsage } from '../generation.types';

function usage(u: TokenUsage): object {
  return { prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.promptTokens + u.completionTokens };
}

/**
 * The seed's `/v1/generate` format: `{id, text, model, finish_reason, usage, created}`; streamed,
 * one `{text, done: false}` event per chunk, then `{text: "", done: true, finish_reason, usage}`
 * (with `sources` when the request used retrieval).
 */
export class SeedPresenter implements GenerationPresenter {
  #finish = 'stop';

  constructor(
    private readonly id: string,
    private readonly model: string,
  ) {}

  streamEvent(e: GenerationStreamEvent): SseFrame[] {
    if (e.type === 'text') return [{ data: { text: e.text, done: false } }];
    if (e.type === 'choice-end') this.#finish = e.finishReason;
    return [];
  }

  streamEnd(s: GenerationSummary): SseFrame[] {
    return [{ data: { text: '', done: true, finish_reason: this.#finish, usage: usage(s.usage), ...(s.sources ? { sources: s.sources } : {}) } }];
  }

  body(r: GenerationResult): object {
    const c = r.choices[0];
    return {
      id: this.id,
      text: c?.text ?? '',
      model: this.model,
      finish_reason: c?.finishReason ?? 'stop',
      usage: usage(r.usage),
      created: Math.floor(Date.now() / 1000),
      ...(r.sources ? { sources: r.sources } : {}),
    };
  }
}
