import { Injectable, Logger } from '@nestjs/common';
import { AppConfig } from '../config/app.config';
import { CommonErrorCode, CommonException } from '../errors/common.exception';
import { normalizeForGuard } from './guard.normalize';

/** One piece of text a client sent for the model, with the request field it came from. */
export interface GuardedText {
  readonly field: string;
  readonly text: string;
}

/**
 * The input guard against prompt injection and abuse: a length bound over the request's whole
 * prompt text (`INPUT_MAX_CHARS`) and operator-chosen patterns (`INPUT_GUARD_PATTERNS`), both off
 * by default. A match is a 400 `input_rejected` that names the field and the rule's number, never
 * the pattern (which would teach a client how to word around it).
 *
 * Patterns are matched against each text as sent and as normalized (NFKC, invisible characters
 * removed, look-alike letters of other scripts folded to Latin, accents dropped, whitespace
 * collapsed: see normalizeForGuard), and against the whole conversation joined, so that a phrase
 * split across two messages is caught too. Retrieved chunks go through `matches()`.
 *
 * Patterns are the operator's: a pattern with catastrophic backtracking is slow on long prompts,
 * so keep them anchored on literal words.
 */
@Injectable()
export class InputGuardService {
  readonly #logger = new Logger('InputGuard');
  readonly #maxChars: number;
  readonly #patterns: readonly RegExp[];

  constructor(config: AppConfig) {
    this.#maxChars = config.inputMaxChars;
    this.#patterns = config.inputGuardPatterns;
  }

  /** True when neither rule is configured: the check is then free. */
  get disabled(): boolean {
    return this.#maxChars === 0 && this.#patterns.length === 0;
  }

  /** Throws a 400 CommonException when the texts break a rule; returns otherwise. */
  check(texts: readonly GuardedText[]): void {
    if (this.disabled) return;
    if (this.#maxChars > 0) {
      const total = texts.reduce((n, t) => n + t.text.length, 0);
      if (total > this.#maxChars) {
        this.#logger.warn(`input refused: ${total} characters over INPUT_MAX_CHARS ${this.#maxChars}`);
        throw new CommonException(
          CommonErrorCode.InputTooLong,
          `Input is ${total} characters; this server accepts at most ${this.#maxChars} per request`,
          { param: texts[0]?.field ?? null },
        );
      }
    }
    if (this.#patterns.length === 0) return;
    const normalized = texts.map((t) => normalizeForGuard(t.text));
    for (const [i, { field, text }] of texts.entries()) {
      const rule = this.#match(text, normalized[i]);
      if (rule >= 0) this.#refuse(field, rule);
    }
    if (texts.length > 1) {
      // A phrase split across messages ("ignore all" + "previous instructions").
      const rule = this.#match(texts.map((t) => t.text).join('\n'), normalized.join(' '));
      // Named after the list the texts come from: `messages`, not one of its entries.
      if (rule >= 0) this.#refuse(texts[0].field.replace(/\[\d+\].*$/, '') || texts[0].field, rule);
    }
  }

  /**
   * The 0-based number of the first INPUT_GUARD_PATTERNS rule that `text` matches (as sent or
   * normalized), or -1. For text that is not the client's own, such as retrieved chunks.
   */
  matches(text: string): number {
    if (this.#patterns.length === 0) return -1;
    return this.#match(text, normalizeForGuard(text));
  }

  #match(raw: string, normalized: string): number {
    return this.#patterns.findIndex((re) => re.test(raw) || re.test(normalized));
  }

  #refuse(field: string, rule: number): never {
    this.#logger.warn(`input refused: ${field} matches INPUT_GUARD_PATTERNS rule ${rule + 1}`);
    throw new CommonException(CommonErrorCode.InputRejected, `${field} was refused by the input guard (rule ${rule + 1})`, { param: field });
  }
}
