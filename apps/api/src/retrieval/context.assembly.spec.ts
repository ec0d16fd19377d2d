import { renderContext } from '@app/retrieval';
import type { RetrievedContext, SearchHit } from '@app/retrieval';
import { lastUserMessage, messagesWithContext, promptWithContext } from './context.assembly';

const hit = (id: string, text: string, score: number): SearchHit => ({ id, documentId: id.split(':')[0], chunkIndex: 0, text, score, metadata: {} });
const hits = [hit('a:0', 'Owls hunt at night.', 0.9), hit('b:0', 'Cats purr.', 0.5)];
const retrieved: RetrievedContext = { hits, sources: [], context: renderContext(hits) };

describe('context assembly (the documented template)', () => {
  it('puts numbered chunks, best first, before the prompt', () => {
    expect(promptWithContext('When do owls hunt?', retrieved)).toBe('Context:\n[1] Owls hunt at night.\n[2] Cats purr.\n\nWhen do owls hunt?');
    expect(promptWithContext('Q', null)).toBe('Q');
    expect(promptWithContext('Q', { hits: [], sources: [], context: renderContext([]) })).toBe('Q');
  });

  it('makes the block the system message, after the caller\'s own', () => {
    const user = { role: 'user' as const, content: 'When?' };
    expect(messagesWithContext([user], retrieved)).toEqual([{ role: 'system', content: 'Context:\n[1] Owls hunt at night.\n[2] Cats purr.' }, user]);
    expect(messagesWithContext([{ role: 'system', content: 'Be brief.' }, user], retrieved)[0]).toEqual({
      role: 'system',
      content: 'Be brief.\n\nContext:\n[1] Owls hunt at night.\n[2] Cats purr.',
    });
    expect(lastUserMessage([user, { role: 'assistant', content: 'x' }, { role: 'user', content: 'last' }, { role: 'assistant', content: 'y' }])).toBe('last');
  });
});
