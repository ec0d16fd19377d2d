export * from './auth.module';
export * from './auth.exception';
export * from './public.decorator';
export * from './api-key.guard';
export * from './static-key.store';
