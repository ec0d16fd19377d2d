import { Injectable } from '@nestjs/common';
import { HealthIndicatorResult, HealthIndicatorService } from '@nestjs/terminus';
import { InferenceService } from '@app/inference';

/** The model (loading, ready, failed) and the scheduler (admitting or draining) as Terminus checks. */
@Injectable()
export class InferenceHealthIndicator {
  constructor(
    private readonly inference: InferenceService,
    private readonly health: HealthIndicatorService,
  ) {}

  model(): HealthIndicatorResult<'model'> {
    const check = this.health.check('model');
    const state = this.inference.state;
    if (state === 'ready') return check.up({ state, id: this.inference.model.id });
    return check.down({ state, message: state === 'loading' ? 'model is loading' : 'model failed to load' });
  }

  scheduler(): HealthIndicatorResult<'scheduler'> {
    const check = this.health.check('scheduler');
    const s = this.inference.scheduler;
    const details = { busy_slots: s.busySlots, slots: s.slots.length, queue_depth: s.queueDepth, queue_capacity: s.queueCapacity };
    if (this.inference.draining) return check.down({ state: 'draining', message: 'draining: not admitting new requests', ...details });
    return check.up({ state: 'admitting', ...details });
  }
}
