import { Global, Module } from '@nestjs/common';
import { AppConfig } from './config/app.config';
import { InputGuardService } from './input-guard/input-guard.service';

/**
 * Provides the validated AppConfig and the input guard everywhere. Tests swap it with
 * `.overrideProvider(AppConfig).useValue(AppConfig.with({...}))`.
 */
@Global()
@Module({
  providers: [{ provide: AppConfig, useFactory: () => AppConfig.fromEnv(process.env) }, InputGuardService],
  exports: [AppConfig, InputGuardService],
})
export class CommonModule {}
