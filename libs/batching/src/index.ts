export * from './batching.module';
export * from './batching.types';
export * from './batching.exception';
export * from './bounded-priority.queue';
export * from './async.channel';
export * from './scheduler';
export * from './prompt-cost';
