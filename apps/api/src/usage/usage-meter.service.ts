import { Injectable } from '@nestjs/common';
import { GenerationEvent, SubmitOptions } from '@app/batching';
import { Principal, priorityOf, RateLimitService, TokenReservation } from '@app/auth';
import type { ModelLimits } from '@app/auth';
import { RequestTelemetry } from '@app/observability';
import { BudgetReservation, BudgetService } from '@app/usage';

/**
 * Connects generation to the caller's key: submits at the key's priority class, and holds the
 * request's worst case (prompt + max tokens) before the model runs, of the key's tokens-per-window
 * limit (RateLimitService.reserve: refused with 429 `token_rate_limit_exceeded` when the window
 * cannot hold it, so parallel requests cannot overshoot the limit) and of its budgets
 * (BudgetService.reserve: 429 `budget_exceeded`). Both reservations are settled to the real
 * prompt + completion tokens as soon as they are known, before the client sees the end of the
 * response (so the next request is judged on them). The usage ledger records the request when its
 * response ends (UsageAdmission). Embeddings and document uploads use `reserve()` (the
 * tokens-per-window limit; the budgets cover generations). A request on a model with per-key
 * limits (`keys create --model-tpm`) is also charged to the key's window on that model.
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

  /** Holds `tokens` of the caller's tokens-per-window limit (429 when it cannot); settle or release it when done. */
  reserve(caller: Principal | undefined, tokens: number): Promise<TokenReservation> {
    return this.limits.reserve(caller, tokens);
  }

  /** Charges usage known only afterwards (no reservation was taken). */
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
   * the caller's tokens-per-window limit and budgets (429 here when either cannot hold them), runs
   * `work`, then settles both to the tokens and notes them for the ledger and the log line.
   * Work that fails or is abandoned is not charged. `model`: the model that does the work, when
   * not the served one (the ledger's model column).
   */
  async chargeTokens<T>(caller: Principal | undefined, tokens: number, work: () => Promise<T>, model?: string): Promise<T> {
    const telemetry = RequestTelemetry.current();
    if (telemetry && model !== undefined) telemetry.model = model;
    const window: TokenReservation = await this.limits.reserve(caller, tokens);
    let reservation: BudgetReservation;
    try {
      reservation = await this.budgets.reserve(caller, tokens);
    } catch (err) {
      await window.release();
      throw err;
    }
    let used = 0;
    try {
      const result = await work();
      used = tokens;
      return result;
    } finally {
      await Promise.all([window.settle(used), reservation.settle(used)]);
      if (used > 0) this.embedded(used);
    }
  }

  /**
   * Passes a generation's events through. Before the first one, reserves `promptTokens +
   * maxTokens` of the caller's tokens-per-window limit and budgets (a refusal surfaces on the first
   * `next()`, before any output); at the `done` event both are settled to the real tokens. A stream
   * cut short (client gone, error) is settled to the prompt and the tokens it produced, or to
   * nothing if it produced none.
   */
  async *meter(
    events: AsyncIterable<GenerationEvent>,
    caller: Principal | undefined,
    promptTokens: number,
    maxTokens = 0,
    model?: { readonly id: string; readonly limits: ModelLimits | null },
  ): AsyncGenerator<GenerationEvent> {
    const chargeModel = (used: number): Promise<void> | undefined =>
      model && used > 0 ? this.limits.chargeModel(caller, model.id, model.limits, used) : undefined;
    const worst = promptTokens + maxTokens;
    const window: TokenReservation = await this.limits.reserve(caller, worst);
    let budget: BudgetReservation;
    try {
      budget = await this.budgets.reserve(caller, worst);
    } catch (err) {
      await window.release();
      throw err;
    }
    let completion = 0;
    let settled = false;
    try {
      for await (const event of events) {
        if (event.kind === 'text') completion += event.tokens;
        else {
          settled = true;
          const used = event.promptTokens + event.completionTokens;
          await Promise.all([window.settle(used), budget.settle(used), chargeModel(used)]);
        }
        yield event;
      }
    } finally {
      if (!settled) {
        const used = completion > 0 ? promptTokens + completion : 0;
        await Promise.all([window.settle(used), budget.settle(used), chargeModel(used)]);
      }
    }
  }
}
