export * from './inference.module';
export * from './inference.service';
export * from './inference.types';
export * from './inference.exception';
export { FALLBACK_CHAT_TEMPLATE } from './llama.adapter';
