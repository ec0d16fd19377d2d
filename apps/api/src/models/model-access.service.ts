import { Injectable } from '@nestjs/common';
import { AuthErrorCode, AuthException, modelAllowed, modelLimitsOf, Principal, RateLimitService } from '@app/auth';
import type { ModelLimits } from '@app/auth';
import { InferenceService, ModelHandle, ModelKind } from '@app/inference';
import { RequestTelemetry } from '@app/observability';

/** A model as a route resolved it: the handle, and the caller's limits on it (for the meter). */
export interface RoutedModel {
  readonly handle: ModelHandle;
  /** The caller's per-model limits, or null: the usage meter charges the model's token window with them. */
  readonly limits: ModelLimits | null;
}

/**
 * How every route reaches a model: `acquire(dto.model, caller, kind)` resolves the name (id or
 * alias; none = the default model, or for embeddings the embedding model), checks it against the
 * caller's key (403 `model_not_allowed` for a key limited to other models) and the key's limits
 * on that model (429), then loads the model if needed (the request waits, bounded) and holds it
 * until the response ends. The order matters: a key that may not use a model never makes the
 * server load it.
 */
@Injectable()
export class ModelAccessService {
  constructor(
    private readonly inference: InferenceService,
    private readonly limits: RateLimitService,
  ) {}

  async acquire(requested: string | undefined, caller: Principal | undefined, kind: ModelKind | readonly ModelKind[] = 'chat'): Promise<RoutedModel> {
    const model = this.inference.resolve(requested, kind);
    const telemetry = RequestTelemetry.current();
    if (telemetry) telemetry.model = model.id;
    if (!modelAllowed(caller, model.id, model.aliases)) {
      throw new AuthException(
        AuthErrorCode.ModelNotAllowed,
        `This API key may not use the model '${requested ?? model.id}'; it may use: ${(caller?.models ?? []).join(', ')}`,
        { param: 'model' },
      );
    }
    const limits = modelLimitsOf(caller, model.id, model.aliases);
    await this.limits.admitModel(caller, model.id, limits);
    return { handle: await this.inference.acquire(model.id, kind), limits };
  }

  /** Whether the caller's key may use the model (`/v1/models` lists only those). */
  allowed(caller: Principal | undefined, id: string, aliases: readonly string[]): boolean {
    return modelAllowed(caller, id, aliases);
  }
}
