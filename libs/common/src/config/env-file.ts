import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { ConfigError } from './app.config';

export interface EnvFileResult {
  /** The file read; undefined when there was none (no `.env` and none named). */
  readonly file: string | undefined;
  /** Variables taken from the file (those not already in the environment). */
  readonly applied: readonly string[];
  /** argv without `--env-file <path>` / `--env-file=<path>`, for the command parser that comes next. */
  readonly argv: string[];
}

/**
 * Reads the env file that both the server and the CLI start from: `--env-file <path>` on the
 * command line, else ENV_FILE, else `.env` in the working directory when there is one. Variables
 * already in the environment win over the file (a deployment's real environment is never
 * overridden by a file left in the folder). A named file that cannot be read is a ConfigError
 * (exit 2, like any invalid setting); a missing default `.env` is not.
 */
export function loadEnvFile(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): EnvFileResult {
  const rest: string[] = [];
  let named: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--env-file') {
      named = argv[i + 1];
      if (named === undefined || named === '') throw new ConfigError('ENV_FILE', 'needs a path after --env-file', named);
      i++;
    } else if (arg.startsWith('--env-file=')) {
      named = arg.slice('--env-file='.length);
    } else {
      rest.push(arg);
    }
  }
  const fromEnv = env.ENV_FILE?.trim();
  const explicit = named ?? (fromEnv ? fromEnv : undefined);
  const file = resolve(cwd, explicit ?? '.env');
  if (explicit === undefined && !existsSync(file)) return { file: undefined, applied: [], argv: rest };
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('ENV_FILE', `names a file that cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, explicit ?? file);
  }
  const applied: string[] = [];
  for (const [name, value] of Object.entries(parseEnv(text))) {
    if (value === undefined || Object.prototype.hasOwnProperty.call(env, name)) continue;
    env[name] = value;
    applied.push(name);
  }
  return { file, applied, argv: rest };
}

/**
 * What the server's and the CLI's entry points run before anything else (before tracing, which
 * reads the environment when it loads): the env file applied to process.env and its flag taken
 * out of process.argv; a named file that cannot be read stops the process with its message and
 * exit code 2, like any invalid setting.
 */
export function applyEnvFileOrExit(): void {
  try {
    process.argv = loadEnvFile(process.argv).argv;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
}
