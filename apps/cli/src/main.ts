import './env';
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

const CLI_NAME = 'npm run cli --';

/** A command as Commander's help sees it (commander is nest-commander's, not a direct dependency). */
interface HelpCommand {
  parent: HelpCommand | null;
  name(): string;
}

/**
 * Commander's usage line, with the program named as users run it. Installed on Commander's Help
 * object, so `this` is that object and its prototype holds the default implementation.
 */
function usageLine(this: object, cmd: HelpCommand): string {
  let root = cmd;
  while (root.parent) root = root.parent;
  const standard = (Object.getPrototypeOf(this) as { commandUsage(c: HelpCommand): string }).commandUsage.call(this, cmd);
  return standard.startsWith(root.name()) ? CLI_NAME + standard.slice(root.name().length) : standard;
}

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
    cliName: CLI_NAME,
    // Commander names the program after the script file (`main`); users type `npm run cli --`.
    helpConfiguration: { commandUsage: usageLine },
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
