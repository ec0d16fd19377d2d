import { Injectable } from '@nestjs/common';
import { GenerationEvent, SubmitOptions } from '@app/batching';
import { Principal, priorityOf, RateLimitService, TokenReservation } from '@app/auth';

/** What a generation may use at most: its prompt and its completion budget. */
export interface TokenBudget {
  readonly promptTokens: number;
  /** max_tokens as resolved (the request's, or the context's remainder). */
  readonly maxTokens: number;
}

/**
 * Connects work to the caller's key: submits at the key's priority class, and charges tokens to its
 * tokens-per-window limit by reservation. A generation holds prompt + max_tokens from admission
 * (refused with a 429 when the window cannot hold them: parallel requests cannot overshoot the
 * limit), settled to the real count as soon as it is known, before the client sees the end of the
 * response (so the next request is judged on it). The same reserve → settle/release hook serves
 * embeddings and document uploads (`reserve`).
 */
@Injectable()
export class UsageMeterService {
  constructor(private readonly limits: RateLimitService) {}

  submitOptions(caller: Principal | undefined, signal: AbortSignal): SubmitOptions {
    return { signal, priority: priorityOf(caller) };
  }

  /** Holds `tokens` of the caller's window (429 when it cannot); settle or release it when done. */
  reserve(caller: Principal | undefined, tokens: number): Promise<TokenReservation> {
    return this.limits.reserve(caller, tokens);
  }

  /** Charges usage known only afterwards (no reservation was taken). */
  charge(caller: Principal | undefined, usage: { total_tokens: number }): Promise<void> {
    return this.limits.charge(caller, usage.total_tokens);
  }

  /**
   * Passes a generation's events through: reserves the budget before the first event (a refusal
   * surfaces on the first `next()`, before any response header), settles to prompt + completion at
   * the `done` event; a stream cut short (client gone, error) is settled to the prompt and the
   * tokens it produced, and one that produced nothing gives its reservation back.
   */
  async *meter(events: AsyncIterable<GenerationEvent>, caller: Principal | undefined, budget: TokenBudget): AsyncGenerator<GenerationEvent> {
    const reservation = await this.limits.reserve(caller, budget.promptTokens + budget.maxTokens);
    let completion = 0;
    let settled = false;
    try {
      for await (const event of events) {
        if (event.kind === 'text') completion += event.tokens;
        else {
          settled = true;
          await reservation.settle(event.promptTokens + event.completionTokens);
        }
        yield event;
      }
    } finally {
      if (!settled) await (completion > 0 ? reservation.settle(budget.promptTokens + completion) : reservation.release());
    }
  }
}
