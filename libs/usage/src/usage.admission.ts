import { ExecutionContext, Injectable, SetMetadata, Inject } from '@nestjs/common';
import type { UsageConfig } from './usage.config';
import { Reflector } from '@nestjs/core';
import type { Request, Response } from 'express';
import type { GatewayAdmission, Principal } from '@app/auth';
import { AppConfig } from '@app/common';
import { RequestTelemetry, routeTemplate } from '@app/observability';
import { BudgetService } from './budget.service';
import { UsageLedgerService } from './usage-ledger.service';

export const METERED = 'usage:metered';

/**
 * Marks a route (or controller) whose requests are accounted: checked against the caller's
 * budgets at admission and recorded in the usage ledger when the response ends. Every route that
 * runs the model (or answers for it from a cache) carries it.
 */
export const Metered = (): MethodDecorator & ClassDecorator => SetMetadata(METERED, true);

/**
 * The gateway guard's last step (GATEWAY_ADMISSION) on metered routes: refuses a key whose budget
 * is spent (429 `budget_exceeded`), adds the near-limit warning headers, and records the request
 * in the ledger once its response has ended (finished, failed or abandoned by the client), with
 * the token counts the scheduler reported for it (RequestTelemetry, the same numbers as the
 * request's log line). A response-cache hit counts as a hit with no model tokens.
 */
@Injectable()
export class UsageAdmission implements GatewayAdmission {
  /** Each handler's flag, read once (metadata never changes). */
  readonly #metered = new WeakMap<object, boolean>();

  constructor(
    private readonly reflector: Reflector,
    private readonly budgets: BudgetService,
    private readonly ledger: UsageLedgerService,
    @Inject(AppConfig) private readonly config: UsageConfig,
  ) {}

  async admit(context: ExecutionContext, principal: Principal): Promise<void> {
    if (!this.#isMetered(context)) return;
    const http = context.switchToHttp();
    const req = http.getRequest<Request>();
    const res = http.getResponse<Response>();
    // Armed first: a budget refusal is a request of this key and route too (an error, no tokens).
    this.#recordWhenDone(req, res, principal);
    const headers = await this.budgets.admit(principal);
    for (const name in headers) res.setHeader(name, headers[name]);
  }

  #isMetered(context: ExecutionContext): boolean {
    const handler = context.getHandler();
    let metered = this.#metered.get(handler);
    if (metered === undefined) {
      metered = this.reflector.getAllAndOverride<boolean>(METERED, [handler, context.getClass()]) === true;
      this.#metered.set(handler, metered);
    }
    return metered;
  }

  #recordWhenDone(req: Request, res: Response, principal: Principal): void {
    let recorded = false;
    const done = (): void => {
      if (recorded) return;
      recorded = true;
      const t = RequestTelemetry.of(req);
      const status = res.writableFinished ? res.statusCode : 499;
      const hit = t?.cache?.endsWith(':hit') === true && t.promptTokens === 0 && t.completionTokens === 0;
      this.ledger.record({
        keyId: principal.id,
        model: t?.model ?? this.config.modelName,
        route: routeTemplate(req),
        promptTokens: t?.promptTokens,
        cachedPromptTokens: t?.cachedPromptTokens,
        completionTokens: t?.completionTokens,
        cacheHits: hit ? 1 : 0,
        errors: status >= 400 ? 1 : 0,
      });
    };
    // 'close' also follows 'finish'; a client that leaves early only triggers 'close'.
    res.once('finish', done);
    res.once('close', done);
  }
}
