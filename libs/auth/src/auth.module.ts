import { Module } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { ApiKeyGuard } from './api-key.guard';
import { StaticKeyStore } from './static-key.store';

/** Registers the API-key guard globally; routes opt out with `@Public()`. */
@Module({
  providers: [StaticKeyStore, ApiKeyGuard, { provide: APP_GUARD, useExisting: ApiKeyGuard }],
  exports: [StaticKeyStore],
})
export class AuthModule {}
