import 'reflect-metadata';
import { CommandFactory } from 'nest-commander';
import { ConfigError, AppConfig } from '@app/common';
import { CliModule } from './cli.module';

// `npm run cli -- keys list | head` closes the pipe early; that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

async function main(): Promise<void> {
  try {
    AppConfig.fromEnv(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  await CommandFactory.run(CliModule, {
    cliName: 'npm run cli --',
    logger: ['error', 'warn'],
    errorHandler: (err) => {
      // Commander's own exits (help, version, unknown option) carry their exit code.
      const code = (err as { exitCode?: number }).exitCode;
      if (code !== undefined) process.exit(code);
      process.stderr.write(`Error: ${err.message}\n`);
      process.exit(1);
    },
    serviceErrorHandler: (err) => {
      process.stderr.write(`Error: ${err.message}\n`);
      process.exit(1);
    },
  });
}

void main();
