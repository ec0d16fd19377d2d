import { SetMetadata } from '@nestjs/common';
import { Scope } from './key.types';

export const IS_PUBLIC = 'auth:public';
export const REQUIRED_SCOPES = 'auth:scopes';

/** Marks a route (or controller) as open: no API key needed. */
export const Public = (): MethodDecorator & ClassDecorator => SetMetadata(IS_PUBLIC, true);

/** Scopes a key needs for a route (or controller). Routes without it need `generate`. */
export const RequireScopes = (...scopes: Scope[]): MethodDecorator & ClassDecorator => SetMetadata(REQUIRED_SCOPES, scopes);
