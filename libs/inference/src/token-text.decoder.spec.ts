import { TokenTextDecoder } from './token-text.decoder';

/** A toy vocabulary: token i is VOCAB[i]; tokens 100/101 are the two halves of "é" in UTF-8. */
const VOCAB = ['Hello', ' wor', 'ld', '!', ' END', 'E', 'ND', ' more'];
const bytes: Record<number, number[]> = { 100: [0xc3], 101: [0xa9] };
function detok(tokens: readonly number[]): string {
  const buf: number[] = [];
  for (const t of tokens) buf.push(...(bytes[t] ?? [...Buffer.from(VOCAB[t])]));
  return Buffer.from(buf).toString('utf8');
}

function run(tokens: number[], stops: string[]): { out: string; stopped: boolean; pieces: string[] } {
  const d = new TokenTextDecoder(detok, stops);
  const pieces: string[] = [];
  for (const t of tokens) {
    pieces.push(d.push(t));
    if (d.stopped) break;
  }
  pieces.push(d.flush());
  return { out: pieces.join(''), stopped: d.stopped, pieces };
}

describe('TokenTextDecoder', () => {
  it('passes text through without stop strings', () => {
    expect(run([0, 1, 2, 3], []).out).toBe('Hello world!');
  });

  it('cuts exactly at a stop string, keeping the text before it', () => {
    const r = run([0, 1, 2, 4, 7], [' END']);
    expect(r).toMatchObject({ out: 'Hello world', stopped: true });
  });

  it('finds a stop string split across tokens and never emits its start', () => {
    const r = run([0, 3, 5, 6, 7], ['END']);
    expect(r.out).toBe('Hello!');
    expect(r.pieces.join('')).not.toContain('E');
    expect(r.stopped).toBe(true);
  });

  it('releases held text that turned out not to be a stop string', () => {
    const r = run([0, 5, 3], ['END']);
    expect(r.out).toBe('HelloE!');
    expect(r.stopped).toBe(false);
  });

  it('waits for the rest of a multi-byte character', () => {
    const d = new TokenTextDecoder(detok, []);
    expect(d.push(100)).toBe('');
    expect(d.push(101)).toBe('é');
  });

  it('uses the earliest of several stop strings', () => {
    expect(run([0, 1, 2, 3], ['!', 'wor']).out).toBe('Hello ');
  });

  it('reports which stop string ended the text (the earliest in the text)', () => {
    const d = new TokenTextDecoder(detok, ['!', ' wor']);
    expect(d.matchedStop).toBeUndefined();
    for (const t of [0, 1, 2, 3]) d.push(t);
    expect(d.stopped).toBe(true);
    expect(d.matchedStop).toBe(' wor');
    const none = new TokenTextDecoder(detok, ['zzz']);
    none.push(0);
    none.flush();
    expect(none.matchedStop).toBeUndefined();
  });
});
