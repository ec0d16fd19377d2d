import { Injectable } from '@nestjs/common';
import { GenerationEvent, SubmitOptions } from '@app/batching';
import { Principal, priorityOf, RateLimitService } from '@app/auth';

/**
 * Connects generation to the caller's key: submits at the key's priority class and charges
 * prompt + completion tokens to its tokens-per-window limit as soon as they are known, before
 * the client sees the end of the response (so the next request is judged on them).
 */
@Injectable()
export class UsageMeterService {
  constructor(private readonly limits: RateLimitService) {}

  submitOptions(caller: Principal | undefined, signal: AbortSignal): SubmitOptions {
    return { signal, priority: priorityOf(caller) };
  }

  /** Charges a finished request's usage. */
  charge(caller: Principal | undefined, usage: { total_tokens: number }): Promise<void> {
    return this.limits.charge(caller, usage.total_tokens);
  }

  /**
   * Passes a generation's events through and charges its tokens at the `done` event; a stream
   * cut short (client gone, error) is charged for the prompt and the tokens it produced.
   */
  async *meter(events: AsyncIterable<GenerationEvent>, caller: Principal | undefined, promptTokens: number): AsyncGenerator<GenerationEvent> {
    let completion = 0;
    let charged = false;
    try {
      for await (const event of events) {
        if (event.kind === 'text') completion += event.tokens;
        else {
          charged = true;
          await this.limits.charge(caller, event.promptTokens + event.completionTokens);
        }
        yield event;
      }
    } finally {
      if (!charged && completion > 0) await this.limits.charge(caller, promptTokens + completion);
    }
  }
}
