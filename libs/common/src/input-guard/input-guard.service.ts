import { Injectable, Logger } from '@nestjs/common';
import { AppConfig } from '../config/app.config';
import { CommonErrorCode, CommonException } from '../errors/common.exception';

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
    for (const { field, text } of texts) {
      const rule = this.#patterns.findIndex((re) => re.test(text));
      if (rule >= 0) {
        this.#logger.warn(`input refused: ${field} matches INPUT_GUARD_PATTERNS rule ${rule + 1}`);
        throw new CommonException(
          CommonErrorCode.InputRejected,
          `${field} was refused by the input guard (rule ${rule + 1})`,
          { param: field },
        );
      }
    }
  }
}
