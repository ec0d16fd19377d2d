import { Module } from '@nestjs/common';

/**
 * The scheduler is plain TypeScript with no Nest dependency; the inference module builds one
 * over its runtime. This module exists so the library has the same shape as the others and
 * gains providers (metrics observers) without changing importers.
 */
@Module({})
export class BatchingModule {}
