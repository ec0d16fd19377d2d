import { createHash } from 'node:crypto';
import type { CacheableRequest } from '@app/caching';
import type { GenerationRequest } from '@app/inference';

/**
 * A prepared generation as the response caches see it: resolved prompt tokens, max_tokens,
 * sampling (greedy when unset, as the runtime does) and every stop string, the template's included.
 */
export function cacheableRequest(
  endpoint: 'generate' | 'completions' | 'chat',
  request: GenerationRequest,
  text: string,
  requestedMaxTokens: number | undefined,
  /** The output constraint as text (response_format), when there is one. */
  format?: string,
  /**
   * The context block that retrieval put into the prompt. It is in the prompt tokens already
   * (the exact key); its hash also scopes the semantic cache, which compares only `text` (the
   * caller's own prompt): a near-identical question is answered from the cache only when the
   * same chunks were retrieved.
   */
  retrievedContext?: string,
  /** The model that answers (its file and id scope every key). */
  model?: { readonly id: string; readonly path: string },
): CacheableRequest {
  const s = request.sampling;
  return {
    endpoint,
    promptTokens: request.prompt.tokens,
    billedPromptTokens: request.prompt.promptTokens,
    maxTokens: request.prompt.maxTokens,
    requestedMaxTokens: requestedMaxTokens ?? null,
    sampling: {
      temperature: s.temperature ?? 0,
      topP: s.topP,
      topK: s.topK,
      minP: s.minP,
      seed: s.seed,
      repeatPenalty: s.repeatPenalty,
      presencePenalty: s.presencePenalty,
      frequencyPenalty: s.frequencyPenalty,
      ignoreEos: s.ignoreEos,
      logitBias: s.logitBias?.size ? JSON.stringify([...s.logitBias].sort(([a], [b]) => a - b)) : undefined,
      format,
      retrieval: retrievedContext ? createHash('sha256').update(retrievedContext).digest('hex').slice(0, 32) : undefined,
    },
    stop: [...request.prompt.templateStop, ...(request.stop ?? [])],
    text,
    model,
  };
}
