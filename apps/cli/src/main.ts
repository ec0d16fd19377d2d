import 'reflect-metadata';
import { CommandFactory } from 'nest-commander';
import { ConfigError, AppConfig } from '@app/common';
import { exitCodeFor } from './base.command';
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
    // Exit codes: 0 ok (help included), 1 the command failed, 2 the command line was wrong.
    errorHandler: (err) => {
      // Commander has printed its message (unknown command or option) already.
      process.exit(exitCodeFor(err));
    },
    serviceErrorHandler: (err) => {
      process.stderr.write(`Error: ${err.message}\n`);
      process.exit(exitCodeFor(err));
    },
  });
}

void main();
