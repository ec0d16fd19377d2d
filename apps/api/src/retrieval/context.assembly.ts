import type { Principal } from '@app/auth';
import type { ChatMessage } from '@app/inference';
import { accessorOf } from './collection.access';
import type { RetrievalService, RetrievedContext } from '@app/retrieval';
import type { RetrievalOptionDto } from './retrieval.dto';

/**
 * Context assembly for a generation's `retrieval` option: the collection's best chunks for
 * `query`, or null without the option. Retrieval runs before the prompt is prepared, so the
 * chunks are part of the prompt tokens, hence of the exact cache's key and of the text that the
 * semantic cache compares: an answer is only reused for the same retrieved context. Retrieved
 * chunks that match the input guard's patterns are left out (RetrievalService.retrieve).
 */
export function retrieveFor(
  retrieval: RetrievalService,
  option: RetrievalOptionDto | undefined,
  query: string,
  /** The caller: a generation can only be grounded on a collection its key may read. */
  caller: Principal | undefined,
): Promise<RetrievedContext | null> {
  if (!option) return Promise.resolve(null);
  return retrieval.retrieve(option.collection, { query, topK: option.top_k, minScore: option.min_score, filter: option.filter }, accessorOf(caller));
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
