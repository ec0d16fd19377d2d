import './tracing';
import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { AppConfig, ConfigError } from '@app/common';
import { InferenceService } from '@app/inference';
import { AppModule } from './app.module';
import { configureApp } from './app.setup';

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
  const app = await NestFactory.create<NestExpressApplication>(AppModule, { bufferLogs: true, bodyParser: false });
  configureApp(app);
  // Listen before the model is loaded so that health probes can report "loading".
  await app.listen(config.port, config.host);
  try {
    await app.get(InferenceService).whenReady();
  } catch (err) {
    process.stderr.write(`Fatal: ${(err as Error).message}\n`);
    await app.close().catch(() => undefined);
    process.exit(1);
  }
  new Logger('Bootstrap').log(`LLM API listening on http://${config.host}:${config.port}`);
}

void bootstrap();
