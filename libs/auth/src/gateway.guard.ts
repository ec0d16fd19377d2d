import { CanActivate, ExecutionContext, Inject, Injectable, Optional } from '@nestjs/common';
import { ApiKeyGuard } from './api-key.guard';
import { Principal } from './key.types';
import { AuthenticatedRequest } from './principal.decorator';
import { RateLimitGuard } from './rate-limit.guard';

/**
 * A last admission step after authentication and rate limits, provided by another module under
 * {@link GATEWAY_ADMISSION} (the usage library's budgets and ledger): it sees the principal and
 * the handler, may refuse by throwing, and may watch the response.
 */
export interface GatewayAdmission {
  admit(context: ExecutionContext, principal: Principal): void | Promise<void>;
}

export const GATEWAY_ADMISSION = Symbol('GATEWAY_ADMISSION');

/**
 * The one global guard: authentication, then rate limits, then the optional admission step,
 * always in that order (each needs the principal). Several APP_GUARDs would depend on provider
 * registration order instead.
 */
@Injectable()
export class GatewayGuard implements CanActivate {
  constructor(
    private readonly keys: ApiKeyGuard,
    private readonly limits: RateLimitGuard,
    @Optional() @Inject(GATEWAY_ADMISSION) private readonly admission?: GatewayAdmission,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    if (!(await this.keys.canActivate(context)) || !(await this.limits.canActivate(context))) return false;
    const principal = this.admission && context.switchToHttp().getRequest<AuthenticatedRequest>().principal;
    if (principal) await this.admission!.admit(context, principal);
    return true;
  }
}
