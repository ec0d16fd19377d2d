import { SetMetadata } from '@nestjs/common';
import { Scope } from './key.types';

export const IS_PUBLIC = 'auth:public';
export const REQUIRED_SCOPES = 'auth:scopes';

/** Marks a route (or controller) as open: no API key needed. */
export const Public = (): MethodDecorator & ClassDecorator => SetMetadata(IS_PUBLIC, true);

/** Scopes a key needs for a route (or controller). Routes without it need `generate`. */
export const RequireScopes = (...scopes: Scope[]): MethodDecorator & ClassDecorator => SetMetadata(REQUIRED_SCOPES, scopes);

export const PROBE_ROUTE = 'auth:probe';
/** A probe route: open or not as HEALTH_PUBLIC (`health`) or METRICS_PUBLIC (`metrics`) says. */
export type ProbeKind = 'health' | 'metrics';

/**
 * Marks a controller's routes as the health probes or the metrics scrape: HEALTH_PUBLIC /
 * METRICS_PUBLIC decide whether they need a key (any key for health, an admin key for metrics).
 * Decided by the handler the request reached, so no spelling of the path (case, trailing slash,
 * percent-encoding) gets around it.
 */
export const ProbeRoute = (kind: ProbeKind): MethodDecorator & ClassDecorator => SetMetadata(PROBE_ROUTE, kind);
