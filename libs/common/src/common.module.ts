import { Global, Module } from '@nestjs/common';
import { AppConfig } from './config/app.config';

/**
 * Provides the validated AppConfig everywhere. Tests swap it with
 * `.overrideProvider(AppConfig).useValue(AppConfig.with({...}))`.
 */
@Global()
@Module({
  providers: [{ provide: AppConfig, useFactory: () => AppConfig.fromEnv(process.env) }],
  exports: [AppConfig],
})
export class CommonModule {}
