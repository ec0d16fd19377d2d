import type { Tokenizer } from './retrieval.types';

/** Options of {@link chunkText}. */
export interface ChunkOptions {
  /** Tokens per chunk. */
  readonly size: number;
  /** Tokens each chunk repeats from the end of the previous one (below `size`). */
  readonly overlap: number;
}

export interface TextChunk {
  readonly index: number;
  readonly text: string;
  /** Token offset of the chunk in the document. */
  readonly start: number;
  readonly tokens: number;
}

/**
 * Splits text into windows of `size` tokens of the embedding model, each starting `size -
 * overlap` tokens after the previous one, so that no chunk exceeds what the embedding context
 * holds and a sentence cut at a boundary is still whole in one of two neighbours.
 */
export function chunkText(text: string, tokenizer: Tokenizer, options: ChunkOptions): TextChunk[] {
  if (options.size < 1 || options.overlap < 0 || options.overlap >= options.size) {
    throw new RangeError(`chunk overlap (${options.overlap}) must be in [0, size=${options.size})`);
  }
  const tokens = tokenizer.tokenize(text);
  const step = options.size - options.overlap;
  const chunks: TextChunk[] = [];
  for (let start = 0; start < tokens.length; start += step) {
    const slice = tokens.slice(start, start + options.size);
    const piece = tokenizer.detokenize(slice).trim();
    if (piece.length > 0) chunks.push({ index: chunks.length, text: piece, start, tokens: slice.length });
    if (start + options.size >= tokens.length) break;
  }
  return chunks;
}
