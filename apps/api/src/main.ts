import './env';
import './tracing';
import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { AppConfig, ConfigError } from '@app/common';
import { InferenceService } from '@app/inference';
import { AppModule } from './app.module';
import { configureApp } from './app.setup';
import { startupSummary } from './startup.summary';

/**
 * A failed start ends with its reason as the last line (then exit 1): through the logger when
 * it is up (same format as the other lines), else on stderr; always on stderr with
 * LOG_LEVEL=silent (the reason is never swallowed).
 */
function fail(err: unknown, logged: boolean): never {
  const message = `Fatal: ${err instanceof Error ? err.message : String(err)}`;
  if (logged) new Logger('Bootstrap').fatal(message);
  else process.stderr.write(`${message}\n`);
  process.exit(1);
}

async function bootstrap(): Promise<void> {
  let config: AppConfig;
  try {
    config = AppConfig.fromEnv(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  let app: NestExpressApplication | undefined;
  try {
    app = await NestFactory.create<NestExpressApplication>(AppModule, { bufferLogs: true, bodyParser: false, abortOnError: false });
    configureApp(app);
    // Listen before the model is loaded so that health probes can report "loading".
    await app.listen(config.port, config.host);
    const model = await app.get(InferenceService).whenReady();
    const summary = startupSummary(config, model, `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${config.port}`);
    new Logger('Bootstrap').log(summary);
  } catch (err) {
    // Closed first, so that nothing it logs comes after the reason.
    await app?.close().catch(() => undefined);
    fail(err, app !== undefined && config.logLevel !== 'silent');
  }
}

void bootstrap();
