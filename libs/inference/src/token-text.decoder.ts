/**
 * Turns a stream of tokens into text, one call per token: holds back bytes of a UTF-8
 * character split across tokens, and text that may be the start of a stop string, so that
 * what is emitted is final. A stop string ends generation; neither it nor anything after it
 * is emitted.
 */
export class TokenTextDecoder {
  readonly #detokenize: (tokens: readonly number[], context: readonly number[]) => string;
  readonly #stops: readonly string[];
  readonly #maxStop: number;
  /** Last tokens already turned into text: SentencePiece needs them to place leading spaces. */
  #context: number[] = [];
  /** Tokens whose text ends inside a multi-byte character. */
  #pendingTokens: number[] = [];
  /** Text held back because it may begin a stop string. */
  #held = '';
  #stopped = false;
  #matched: string | undefined;

  constructor(detokenize: (tokens: readonly number[], context: readonly number[]) => string, stops: readonly string[]) {
    this.#detokenize = detokenize;
    this.#stops = stops.filter((s) => s.length > 0);
    this.#maxStop = Math.max(0, ...this.#stops.map((s) => s.length));
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** The stop string that ended the text (undefined until one did). */
  get matchedStop(): string | undefined {
    return this.#matched;
  }

  /** Text that is now final ('' when held back); after a stop string, `stopped` is true. */
  push(token: number): string {
    if (this.#stopped) return '';
    this.#pendingTokens.push(token);
    let text = this.#detokenize(this.#pendingTokens, this.#context);
    // An incomplete UTF-8 sequence decodes to U+FFFD; wait for the rest (a character has ≤ 4 bytes).
    if (text.endsWith('\uFFFD') && this.#pendingTokens.length < 4) return '';
    this.#context.push(...this.#pendingTokens);
    if (this.#context.length > 8) this.#context = this.#context.slice(-8);
    this.#pendingTokens = [];
    if (this.#maxStop === 0) return text;
    text = this.#held + text;
    let cut = -1;
    for (const stop of this.#stops) {
      const at = text.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) [cut, this.#matched] = [at, stop];
    }
    if (cut >= 0) {
      this.#stopped = true;
      this.#held = '';
      return text.slice(0, cut);
    }
    const keep = this.#partialStopSuffix(text);
    this.#held = text.slice(text.length - keep);
    return text.slice(0, text.length - keep);
  }

  /** Whatever was held back, at the end of generation. */
  flush(): string {
    if (this.#stopped) return '';
    const pending = this.#pendingTokens.length ? this.#detokenize(this.#pendingTokens, this.#context) : '';
    this.#pendingTokens = [];
    const out = this.#held + pending;
    this.#held = '';
    return out;
  }

  /** Length of the longest end of `text` that is a proper start of some stop string. */
  #partialStopSuffix(text: string): number {
    for (let n = Math.min(this.#maxStop - 1, text.length); n > 0; n--) {
      const tail = text.slice(text.length - n);
      if (this.#stops.some((s) => s.startsWith(tail))) return n;
    }
    return 0;
  }
}
