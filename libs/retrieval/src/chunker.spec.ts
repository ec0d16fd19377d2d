import { chunkText } from './chunker';
import type { Tokenizer } from './retrieval.types';

/** Words as tokens: enough to check window arithmetic (the real tokenizer runs in the e2e test). */
const words: Tokenizer = {
  tokenize: (text) => text.split(/\s+/).filter(Boolean).map((w) => vocab(w)),
  detokenize: (tokens) => tokens.map((t) => names[t]).join(' '),
};
const names: string[] = [];
function vocab(w: string): number {
  const i = names.indexOf(w);
  return i >= 0 ? i : names.push(w) - 1;
}

describe('chunkText', () => {
  const text = Array.from({ length: 10 }, (_, i) => `w${i}`).join(' ');

  it('cuts windows of size tokens that overlap by overlap tokens', () => {
    const chunks = chunkText(text, words, { size: 4, overlap: 1 });
    expect(chunks.map((c) => c.text)).toEqual(['w0 w1 w2 w3', 'w3 w4 w5 w6', 'w6 w7 w8 w9']);
    expect(chunks.map((c) => c.start)).toEqual([0, 3, 6]);
  });

  it('keeps a short text whole and does not emit a trailing window already covered', () => {
    expect(chunkText('a b c', words, { size: 8, overlap: 2 }).map((c) => c.text)).toEqual(['a b c']);
    expect(chunkText(text, words, { size: 5, overlap: 0 })).toHaveLength(2);
  });

  it('returns nothing for blank text and refuses an overlap as large as the window', () => {
    expect(chunkText('   ', words, { size: 4, overlap: 1 })).toEqual([]);
    expect(() => chunkText(text, words, { size: 4, overlap: 4 })).toThrow(RangeError);
  });
});
