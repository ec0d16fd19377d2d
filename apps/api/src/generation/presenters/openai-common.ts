import type { TextLogprob } from '@app/batching';
import type { TokenUsage } from '../generation.types';

/** What every OpenAI response carries: a fresh id and time (a cached answer is a new response too). */
export interface OpenAIMeta {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

/** OpenAI's usage object, with prompt tokens served from a KV cache. */
export function openaiUsage(u: TokenUsage): object {
  return {
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    total_tokens: u.promptTokens + u.completionTokens,
    prompt_tokens_details: { cached_tokens: u.cachedPromptTokens },
  };
}

/** Chat's per-token log-probabilities (`logprobs.content[]`), `top` alternatives each. */
export function chatLogprobs(entries: readonly TextLogprob[], top: number): object[] {
  return entries.map((e) => ({
    token: e.text,
    logprob: e.logprob,
    bytes: [...e.bytes],
    top_logprobs: e.top.slice(0, top).map((t) => ({ token: t.text, logprob: t.logprob, bytes: [...t.bytes] })),
  }));
}
