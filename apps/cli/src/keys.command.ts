import { Command, Option, SubCommand } from 'nest-commander';
import {
  ApiKeysService,
  AuthErrorCode,
  AuthException,
  parseBudget,
  parseExpiry,
  parseModelLimit,
  parseModels,
  parseLimit,
  parsePriority,
  parseScopes,
  SCOPES,
} from '@app/auth';
import type { UpdateKeyOptions } from '@app/auth';
import { BaseCommand } from './base.command';
import { formatIssued, formatKey, formatTable, issuedJson, keyJson } from './keys.presenter';

interface OutputOptions {
  json?: boolean;
}

interface SettingsOptions extends OutputOptions {
  rpm?: string;
  tpm?: string;
  concurrency?: string;
  budgetDay?: string;
  budgetMonth?: string;
  scopes?: string;
  expires?: string;
  priority?: string;
  models?: string;
  modelRpm?: string;
  modelTpm?: string;
}

interface CreateOptions extends SettingsOptions {
  name?: string;
  quiet?: boolean;
}

/** The parsed values of the options given (absent: the default, or unchanged for update). */
function settings(o: SettingsOptions): UpdateKeyOptions {
  return {
    rpm: o.rpm === undefined ? undefined : parseLimit('rpm', o.rpm),
    tpm: o.tpm === undefined ? undefined : parseLimit('tpm', o.tpm),
    concurrency: o.concurrency === undefined ? undefined : parseLimit('concurrency', o.concurrency),
    budgetDay: o.budgetDay === undefined ? undefined : parseBudget('budget-day', o.budgetDay),
    budgetMonth: o.budgetMonth === undefined ? undefined : parseBudget('budget-month', o.budgetMonth),
    scopes: o.scopes === undefined ? undefined : parseScopes(o.scopes),
    priority: o.priority === undefined ? undefined : parsePriority(o.priority),
    expiresAt: o.expires === undefined ? undefined : parseExpiry(o.expires),
    models: o.models === undefined ? undefined : parseModels(o.models),
    modelRpm: o.modelRpm === undefined ? undefined : parseModelLimit('model-rpm', o.modelRpm),
    modelTpm: o.modelTpm === undefined ? undefined : parseModelLimit('model-tpm', o.modelTpm),
  };
}

const write = (text: string): void => void process.stdout.write(text);
const json = (value: unknown): void => write(`${JSON.stringify(value, null, 2)}\n`);

function oneRef(args: string[], verb: string): string {
  if (args.length !== 1) {
    throw new AuthException(AuthErrorCode.InvalidKeyOptions, `keys ${verb} takes exactly one key id or name (got ${args.length})`);
  }
  return args[0];
}

/** `--json` on every keys command: one JSON document on stdout, for scripts. */
abstract class KeysSubCommand extends BaseCommand {
  @Option({ flags: '--json', description: 'Machine-readable output (JSON on stdout)' })
  parseJson(): boolean {
    return true;
  }
}

/** The options create and update share: limits, budgets, scopes, expiry, priority. */
abstract class KeySettingsCommand extends KeysSubCommand {
  @Option({ flags: '--rpm <n>', description: 'Requests per window (RATE_LIMIT_WINDOW_MS); 0 = unlimited. Default KEY_DEFAULT_RPM' })
  parseRpm(v: string): string {
    return v;
  }

  @Option({ flags: '--tpm <n>', description: 'Prompt + completion tokens per window; 0 = unlimited. Default KEY_DEFAULT_TPM' })
  parseTpm(v: string): string {
    return v;
  }

  @Option({ flags: '--concurrency <n>', description: 'Requests in flight at once; 0 = unlimited. Default KEY_DEFAULT_CONCURRENCY' })
  parseConcurrency(v: string): string {
    return v;
  }

  @Option({ flags: '--budget-day <tokens>', description: 'Prompt + completion tokens per UTC day (50k, 2m); 0 or none = no budget (default)' })
  parseBudgetDay(v: string): string {
    return v;
  }

  @Option({ flags: '--budget-month <tokens>', description: 'Prompt + completion tokens per UTC month (50k, 2m); 0 or none = no budget (default)' })
  parseBudgetMonth(v: string): string {
    return v;
  }

  @Option({ flags: '--scopes <list>', description: `Comma list of ${SCOPES.join(', ')} (default generate)` })
  parseScopes(v: string): string {
    return v;
  }

  @Option({ flags: '--expires <when>', description: 'Duration (90m, 12h, 30d, 8w, 1y), ISO date, or never (default)' })
  parseExpires(v: string): string {
    return v;
  }

  @Option({ flags: '--priority <class>', description: 'Scheduler queue class: low, normal (default) or high' })
  parsePriority(v: string): string {
    return v;
  }

  @Option({ flags: '--models <list>', description: 'Comma list of the models (ids or aliases) the key may use; all (default) = every model' })
  parseModels(v: string): string {
    return v;
  }

  @Option({ flags: '--model-rpm <model=n,...>', description: 'Requests per window on given models, besides --rpm; 0 removes a model\'s limit' })
  parseModelRpm(v: string): string {
    return v;
  }

  @Option({ flags: '--model-tpm <model=n,...>', description: 'Prompt + completion tokens per window on given models, besides --tpm; 0 removes a model\'s limit' })
  parseModelTpm(v: string): string {
    return v;
  }
}

@SubCommand({ name: 'create', description: 'Create an API key and print it (the only time it is shown)' })
export class KeysCreateCommand extends KeySettingsCommand {
  constructor(private readonly keys: ApiKeysService) {
    super();
  }

  async run(args: string[], o: CreateOptions): Promise<void> {
    if (args.length > 0) throw new AuthException(AuthErrorCode.InvalidKeyOptions, `unexpected argument ${JSON.stringify(args[0])}; use --name`);
    if (!o.name) throw new AuthException(AuthErrorCode.InvalidKeyOptions, 'keys create needs --name <name>');
    const issued = await this.keys.create({ name: o.name, ...settings(o) });
    if (o.quiet) write(`${issued.key}\n`);
    else if (o.json) json(issuedJson(issued));
    else write(formatIssued('Created', issued));
  }

  @Option({ flags: '-n, --name <name>', description: 'Label, unique among unrevoked keys (letters, digits, . _ @ -)' })
  parseName(v: string): string {
    return v;
  }

  @Option({ flags: '-q, --quiet', description: 'Print only the key (for export API_KEY=$(...))' })
  parseQuiet(): boolean {
    return true;
  }
}

@SubCommand({
  name: 'update',
  arguments: '<id-or-name>',
  description: 'Change a key\'s limits, budgets, scopes, models, priority or expiry (running servers see it within KEY_CACHE_TTL_MS)',
})
export class KeysUpdateCommand extends KeySettingsCommand {
  constructor(private readonly keys: ApiKeysService) {
    super();
  }

  async run(args: string[], o: SettingsOptions): Promise<void> {
    const changes = settings(o);
    if (Object.values(changes).every((v) => v === undefined)) {
      throw new AuthException(
        AuthErrorCode.InvalidKeyOptions,
        'keys update needs at least one of --rpm --tpm --concurrency --budget-day --budget-month --scopes --priority --expires --models --model-rpm --model-tpm',
      );
    }
    const record = await this.keys.update(oneRef(args, 'update'), changes);
    if (o.json) json(keyJson(record));
    else write(`Updated API key ${record.id} "${record.name}":\n${formatKey(record)}`);
  }
}

@SubCommand({ name: 'list', aliases: ['ls'], description: 'List keys (never their secrets)' })
export class KeysListCommand extends KeysSubCommand {
  constructor(private readonly keys: ApiKeysService) {
    super();
  }

  async run(args: string[], o: OutputOptions): Promise<void> {
    if (args.length > 0) throw new AuthException(AuthErrorCode.InvalidKeyOptions, `unexpected argument ${JSON.stringify(args[0])}`);
    const keys = await this.keys.list();
    if (o.json) json(keys.map(keyJson));
    else write(formatTable(keys));
  }
}

@SubCommand({ name: 'revoke', arguments: '<id-or-name>', description: 'Revoke a key at once (running servers notice within KEY_CACHE_TTL_MS)' })
export class KeysRevokeCommand extends KeysSubCommand {
  constructor(private readonly keys: ApiKeysService) {
    super();
  }

  async run(args: string[], o: OutputOptions): Promise<void> {
    const { record, alreadyRevoked } = await this.keys.revoke(oneRef(args, 'revoke'));
    if (o.json) json({ ...keyJson(record), already_revoked: alreadyRevoked });
    else write(`${alreadyRevoked ? 'Already revoked' : 'Revoked'}: API key ${record.id} "${record.name}"\n`);
  }
}

@SubCommand({ name: 'rotate', arguments: '<id-or-name>', description: 'Give a key a new secret (printed once); the old one stops working' })
export class KeysRotateCommand extends KeysSubCommand {
  constructor(private readonly keys: ApiKeysService) {
    super();
  }

  async run(args: string[], o: OutputOptions & { quiet?: boolean }): Promise<void> {
    const issued = await this.keys.rotate(oneRef(args, 'rotate'));
    if (o.quiet) write(`${issued.key}\n`);
    else if (o.json) json(issuedJson(issued));
    else write(formatIssued('Rotated', issued));
  }

  @Option({ flags: '-q, --quiet', description: 'Print only the new key' })
  parseQuiet(): boolean {
    return true;
  }
}

@Command({
  name: 'keys',
  description: 'Manage API keys (in DATA_DIR/keys.db, or DATABASE_URL)',
  subCommands: [KeysCreateCommand, KeysUpdateCommand, KeysListCommand, KeysRevokeCommand, KeysRotateCommand],
})
export class KeysCommand extends BaseCommand {
  async run(): Promise<void> {
    this.command.help();
  }
}
