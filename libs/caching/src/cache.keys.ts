import { createHash, hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { CacheableRequest, CacheSampling } from './caching.types';

/** Bump when the key material or the stored record changes shape: old entries then never match. */
export const CACHE_SCHEMA = 1;

const SAMPLE = 1024 * 1024;

/**
 * Identity of a GGUF file: SHA-256 over its size, its first MiB (the header: architecture,
 * tokenizer, chat template, quantisation and the start of the weights) and its last MiB (the end
 * of the weights). Cheap on a 40 GB file, and two files that differ in metadata, quantisation or
 * trailing weights never share cache entries; the served name (MODEL_NAME) plays no part.
 */
export async function modelFingerprint(path: string): Promise<string> {
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    const hash = createHash('sha256').update(`gguf:${size}:`);
    const head = Buffer.alloc(Math.min(SAMPLE, size));
    await file.read(head, 0, head.length, 0);
    hash.update(head);
    if (size > SAMPLE) {
      const tail = Buffer.alloc(Math.min(SAMPLE, size - SAMPLE));
      await file.read(tail, 0, tail.length, size - tail.length);
      hash.update(tail);
    }
    return hash.digest('hex').slice(0, 32);
  } finally {
    await file.close();
  }
}

/** Sampler fields that node-llama-cpp ignores at temperature 0 (greedy decoding). */
const SAMPLING_ONLY = new Set(['topP', 'topK', 'minP', 'seed']);

/**
 * Sampling with the runtime's real behaviour folded in: at temperature 0 the top-p/top-k/min-p
 * filters and the seed change nothing, so they do not split the cache. Keys sorted, undefined
 * dropped: field order and absent-vs-undefined never change a key.
 */
export function canonicalSampling(sampling: CacheSampling): [string, number | boolean | string][] {
  const greedy = sampling.temperature === 0;
  return Object.keys(sampling)
    .sort()
    .filter((k) => sampling[k] !== undefined && !(greedy && SAMPLING_ONLY.has(k)))
    .map((k) => [k, sampling[k] as number | boolean | string]);
}

/** A request is deterministic when greedy, or sampled with a fixed seed. */
export function isDeterministic(sampling: CacheSampling): boolean {
  return sampling.temperature === 0 || sampling.seed !== undefined;
}

/**
 * The exact-cache key: SHA-256 over the schema version, the model's fingerprint, the response
 * family and every resolved field that changes the output (prompt tokens after templating,
 * max_tokens, sampling, every stop string), and the cache scope (CACHE_SCOPE=key: the caller's
 * key; '' when every key shares the cache). The stream flag is not part of it: a streamed and a
 * plain request share the answer, and each is rendered in its own format.
 */
export function exactKey(request: CacheableRequest, model: string, scope = ''): string {
  const header = JSON.stringify([
    CACHE_SCHEMA,
    model,
    scope,
    request.endpoint,
    request.maxTokens,
    canonicalSampling(request.sampling),
    request.stop,
    request.promptTokens.length,
  ]);
  const tokens = Buffer.from(Uint32Array.from(request.promptTokens).buffer);
  return hash('sha256', Buffer.concat([Buffer.from(header), tokens]), 'hex');
}

/**
 * The semantic cache's scope: a hit is only possible between requests with the same model, the
 * same embedding model, the same response family and the same output-shaping parameters
 * (max_tokens as requested, sampling, stop strings), and the same cache scope (the caller's key
 * under CACHE_SCOPE=key). The prompt itself is left out: that is what the vectors compare.
 */
export function semanticScope(request: CacheableRequest, model: string, embeddingModel: string, scope = ''): string {
  return createHash('sha256')
    .update(
      JSON.stringify([
        CACHE_SCHEMA,
        model,
        scope,
        embeddingModel,
        request.endpoint,
        request.requestedMaxTokens,
        canonicalSampling(request.sampling),
        request.stop,
      ]),
    )
    .digest('hex')
    .slice(0, 32);
}
