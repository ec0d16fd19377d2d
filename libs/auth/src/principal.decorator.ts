import { createParamDecorator, ExecutionContext } from '@nestjs/common';
import type { Request } from 'express';
import { Principal } from './key.types';

/** A request that went through the ApiKeyGuard on a protected route. */
export interface AuthenticatedRequest extends Request {
  principal?: Principal;
}

export function principalOf(req: Request): Principal | undefined {
  return (req as AuthenticatedRequest).principal;
}

/** Injects the authenticated caller (undefined on public routes). */
export const Caller = createParamDecorator(
  (_: unknown, ctx: ExecutionContext): Principal | undefined => principalOf(ctx.switchToHttp().getRequest<Request>()),
);
