import { Injectable } from '@nestjs/common';
import { GenerationEvent, SubmitOptions } from '@app/batching';
import { Principal, priorityOf, RateLimitService } from '@app/auth';
import { RequestTelemetry } from '@app/observability';
import { BudgetReservation, BudgetService } from '@app/usage';

/**
 * Connects generation to the caller's key: submits at the key's priority class, holds the
 * request's worst case (prompt + max tokens) of the key's budgets before the model runs, and
 * charges prompt + completion tokens to its tokens-per-window limit and budgets as soon as they
 * are known, before the client sees the end of the response (so the next request is judged on
 * them). The usage ledger records the request when its response ends (UsageAdmission).
 */
@Injectable()
export class UsageMeterService {
  constructor(
    private readonly limits: RateLimitService,
    private readonly budgets: BudgetService,
  ) {}

  submitOptions(caller: Principal | undefined, signal: AbortSignal): SubmitOptions {
    return { signal, priority: priorityOf(caller) };
  }

  /** Charges a finished request's usage. */
  charge(caller: Principal | undefined, usage: { total_tokens: number }): Promise<void> {
    return this.limits.charge(caller, usage.total_tokens);
  }

  /** Notes the prompt tokens of a request that ran no generation (embeddings) for the ledger and the log line. */
  embedded(promptTokens: number): void {
    const telemetry = RequestTelemetry.current();
    if (telemetry) telemetry.promptTokens += promptTokens;
  }

  /**
   * Work that runs a model but no generation (reranking), charged in tokens: reserves `tokens` of
   * the caller's budgets (a spent budget rejects here), runs `work`, then charges the tokens to
   * the tokens-per-window limit and the budgets and notes them for the ledger and the log line.
   * Work that fails or is abandoned is not charged. `model`: the model that does the work, when
   * not the served one (the ledger's model column).
   */
  async chargeTokens<T>(caller: Principal | undefined, tokens: number, work: () => Promise<T>, model?: string): Promise<T> {
    const telemetry = RequestTelemetry.current();
    if (telemetry && model !== undefined) telemetry.model = model;
    const reservation: BudgetReservation = await this.budgets.reserve(caller, tokens);
    let used = 0;
    try {
      const result = await work();
      used = tokens;
      return result;
    } finally {
      await Promise.all([used > 0 ? this.limits.charge(caller, used) : undefined, reservation.settle(used)]);
      if (used > 0) this.embedded(used);
    }
  }

  /**
   * Passes a generation's events through. Before the first one, reserves `promptTokens +
   * maxTokens` of the caller's budgets (a spent budget rejects here: 429 `budget_exceeded`
   * before any output); at the `done` event charges the real tokens. A stream cut short (client
   * gone, error) is charged for the prompt and the tokens it produced, or nothing if it produced
   * none.
   */
  async *meter(events: AsyncIterable<GenerationEvent>, caller: Principal | undefined, promptTokens: number, maxTokens = 0): AsyncGenerator<GenerationEvent> {
    const reservation: BudgetReservation = await this.budgets.reserve(caller, promptTokens + maxTokens);
    let completion = 0;
    let charged = false;
    try {
      for await (const event of events) {
        if (event.kind === 'text') completion += event.tokens;
        else {
          charged = true;
          const used = event.promptTokens + event.completionTokens;
          await Promise.all([this.limits.charge(caller, used), reservation.settle(used)]);
        }
        yield event;
      }
    } finally {
      if (!charged) {
        const used = completion > 0 ? promptTokens + completion : 0;
        await Promise.all([used > 0 ? this.limits.charge(caller, used) : undefined, reservation.settle(used)]);
      }
    }
  }
}
