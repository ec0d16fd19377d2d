import type { Principal } from '@app/auth';
import { CommonErrorCode, CommonException } from '@app/common';
import type { ChatMessage, RerankerService } from '@app/inference';
import { DEFAULT_TOP_K, renderContext, toSource } from '@app/retrieval';
import type { CollectionAccessor, RetrievalQuery, RetrievalService, RetrievedContext, SearchHit } from '@app/retrieval';
import { accessorOf } from './collection.access';
import { MAX_TOP_K, RERANK_CANDIDATES } from './retrieval.dto';
import type { RetrievalOptionDto } from './retrieval.dto';

/**
 * Context assembly for a generation's `retrieval` option: the collection's best chunks for
 * `query`, or null without the option. Retrieval runs before the prompt is prepared, so the
 * chunks are part of the prompt tokens, hence of the exact cache's key and of the text that the
 * semantic cache compares: an answer is only reused for the same retrieved context. The caller
 * must be able to read the collection (its own, shared, or any with the admin scope), and chunks
 * that match the input guard's patterns are left out of the prompt (RetrievalService.screen).
 */
export async function retrieveFor(
  retrieval: RetrievalService,
  option: RetrievalOptionDto | undefined,
  query: string,
  reranker: RerankerService,
  /** The caller: a generation can only be grounded on a collection its key may read. */
  caller: Principal | undefined,
): Promise<RetrievedContext | null> {
  if (!option) return null;
  const who = accessorOf(caller);
  const q: RetrievalQuery = { query, topK: option.top_k, minScore: option.min_score, filter: option.filter };
  if (!option.rerank) return retrieval.retrieve(option.collection, q, who);
  const reranked = await searchReranked(retrieval, reranker, option.collection, q, 'retrieval.rerank', who);
  const kept = new Set(retrieval.screen(option.collection, reranked.map((r) => r.hit)));
  const ranked = reranked.filter((r) => kept.has(r.hit));
  const hits = ranked.map((r) => r.hit);
  return { hits, sources: ranked.map((r) => ({ ...toSource(r.hit), relevance_score: r.score })), context: renderContext(hits) };
}

/**
 * `rerank: true`: the collection is searched for RERANK_CANDIDATES × top_k chunks (at most
 * MAX_TOP_K), the reranker scores each against the query, and the top_k best are kept, best
 * first. A 400 naming `param` when no reranker is configured.
 */
export async function searchReranked(
  retrieval: RetrievalService,
  reranker: RerankerService,
  collection: string,
  q: RetrievalQuery,
  param: string,
  who: CollectionAccessor,
): Promise<{ hit: SearchHit; score: number }[]> {
  if (!reranker.configured) {
    throw new CommonException(CommonErrorCode.UnsupportedParameter, `${param} needs a reranking model: set RERANK_MODEL_PATH on the server`, { param });
  }
  const topK = q.topK ?? DEFAULT_TOP_K;
  const candidates = await retrieval.query(collection, { ...q, topK: Math.min(MAX_TOP_K, topK * RERANK_CANDIDATES) }, who);
  const scores = await reranker.rank(q.query, candidates.map((h) => h.text));
  return candidates
    .map((hit, i) => ({ hit, score: scores[i] }))
    .sort((a, b) => b.score - a.score)
    .slice(0, topK);
}

/** Completions: the context block, then the prompt. */
export function promptWithContext(prompt: string, retrieved: RetrievedContext | null): string {
  return (retrieved?.context ?? '') + prompt;
}

/**
 * Chat: the context block as the system message (after the caller's own system message when the
 * conversation starts with one, since some chat templates accept only one system message).
 */
export function messagesWithContext(messages: ChatMessage[], retrieved: RetrievedContext | null): ChatMessage[] {
  const context = retrieved?.context.trimEnd();
  if (!context) return messages;
  const [first, ...rest] = messages;
  if (first?.role === 'system') return [{ role: 'system', content: `${first.content}\n\n${context}` }, ...rest];
  return [{ role: 'system', content: context }, ...messages];
}

/** The chat's question: its last user message. */
export function lastUserMessage(messages: readonly ChatMessage[]): string {
  return [...messages].reverse().find((m) => m.role === 'user')?.content ?? messages[messages.length - 1]?.content ?? '';
}
