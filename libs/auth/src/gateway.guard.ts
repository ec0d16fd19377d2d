import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { ApiKeyGuard } from './api-key.guard';
import { RateLimitGuard } from './rate-limit.guard';

/**
 * The one global guard: authentication, then rate limits, always in that order (the limits
 * need the principal). Two APP_GUARDs would depend on provider registration order instead.
 */
@Injectable()
export class GatewayGuard implements CanActivate {
  constructor(
    private readonly keys: ApiKeyGuard,
    private readonly limits: RateLimitGuard,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    return (await this.keys.canActivate(context)) && this.limits.canActivate(context);
  }
}
