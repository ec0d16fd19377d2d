import { CommandRunner, Option } from 'nest-commander';

/** Exit codes scripts can rely on. */
export enum ExitCode {
  Ok = 0,
  /** The command ran and failed (key not found, database unreachable, ...). */
  Error = 1,
  /** The command line was wrong (unknown option, bad value, missing argument). */
  Usage = 2,
}

/** Commander's own exits that are not usage errors. */
const COMMANDER_OK = new Set(['commander.helpDisplayed', 'commander.help', 'commander.version']);

/** Exit code for an error thrown by commander (parsing) or by a command. */
export function exitCodeFor(err: unknown): ExitCode {
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && code.startsWith('commander.')) return COMMANDER_OK.has(code) ? ExitCode.Ok : ExitCode.Usage;
  if (code === 'invalid_key_options' || code === 'invalid_usage_query') return ExitCode.Usage;
  return ExitCode.Error;
}

/**
 * Base of the CLI's commands: nest-commander builds sub-commands with `new Command()`, which
 * does not inherit the root's exit handling, so each command installs it: parsing errors (already
 * printed by commander) exit 2, help exits 0.
 */
export abstract class BaseCommand extends CommandRunner {
  override setCommand(command: Parameters<CommandRunner['setCommand']>[0]): this {
    command.exitOverride((err) => process.exit(exitCodeFor(err)));
    return super.setCommand(command);
  }
}

/**
 * Thrown by an option parser for a bad value: commander prints "option '--x <v>' argument 'y' is
 * invalid. <message>" and the command exits 2 (what commander's own InvalidArgumentError does,
 * without importing commander, which is nest-commander's dependency and not ours).
 */
export class OptionValueError extends Error {
  readonly code = 'commander.invalidArgument';
  readonly exitCode = ExitCode.Usage;
}

/**
 * Base of the commands that talk to a running server: where it is (`--url`, default from HOST and
 * PORT, `.env` included), the key they send (`--key`) and the output format (`--json`).
 */
export abstract class ServerCommand extends BaseCommand {
  @Option({ flags: '--url <url>', description: 'Server base URL (default from HOST and PORT, e.g. http://127.0.0.1:8000)' })
  parseUrl(value: string): string {
    if (!/^https?:\/\/[^\s]+$/.test(value)) throw new OptionValueError('expected an http(s) URL');
    return value;
  }

  @Option({ flags: '--key <key>', description: 'API key (default $API_KEY, else API_KEYS[0]); admin scope for cache and model commands, retrieval scope for collection and document writes' })
  parseKey(value: string): string {
    return value;
  }

  @Option({ flags: '--json', description: 'Machine-readable output' })
  parseJson(): boolean {
    return true;
  }
}
