import { Option, SubCommand } from 'nest-commander';
import { existsSync, rmSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { AppConfig } from '@app/common';
import { buildCatalog, ModelSpec } from '@app/inference';
import { OptionValueError, ServerCommand } from '../base.command';
import { ProgressBar } from '../support/progress.bar';
import { AdminModel, ModelAdminClient, ModelList, ServerTarget, ServerUnreachable } from './model-admin.client';
import { partialDownload, pullModel } from './model.pull';

interface CommonOptions extends ServerTarget {
  json?: boolean;
}

const write = (text: string): void => void process.stdout.write(text);
const json = (value: unknown): void => write(`${JSON.stringify(value, null, 2)}\n`);

function mb(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return '-';
  return bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(2)} GiB` : `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

function oneName(args: string[], verb: string): string {
  if (args.length !== 1) throw new OptionValueError(`model ${verb} takes exactly one model id or alias (got ${args.length})`);
  return args[0];
}


@SubCommand({
  name: 'list',
  aliases: ['ls'],
  description: 'List the configured models with their state and memory (asks the server; from the configuration when it is not running)',
})
export class ModelListCommand extends ServerCommand {
  constructor(
    private readonly client: ModelAdminClient,
    private readonly config: AppConfig,
  ) {
    super();
  }

  async run(_args: string[], o: CommonOptions): Promise<void> {
    try {
      const list = await this.client.list(o);
      if (o.json) json({ source: 'server', url: this.client.url(o), ...list });
      else write(formatServerList(list));
    } catch (err) {
      if (!(err instanceof ServerUnreachable)) throw err;
      // The registry of a server that is not running is its configuration.
      const catalog = buildCatalog(this.config);
      if (o.json) json({ source: 'configuration', reason: err.message, default: catalog.defaultId, embedding: catalog.embeddingId ?? null, data: catalog.specs });
      else write(`${err.message}; models from the configuration (states unknown):\n${formatCatalog(catalog.specs, catalog.defaultId)}`);
    }
  }
}

@SubCommand({ name: 'load', arguments: '<model>', description: 'Load a model on the running server now (by id or alias); its keep-alive starts' })
export class ModelLoadCommand extends ServerCommand {
  constructor(private readonly client: ModelAdminClient) {
    super();
  }

  async run(args: string[], o: CommonOptions): Promise<void> {
    const entry = await this.client.act(o, 'load', oneName(args, 'load'));
    if (o.json) json(entry);
    else write(`Loaded ${String(entry.id)} (${mb((entry.memory as { ram: number } | null)?.ram)} RAM by estimate)\n`);
  }
}

@SubCommand({ name: 'unload', arguments: '<model>', description: 'Unload a model on the running server once its in-flight requests are done' })
export class ModelUnloadCommand extends ServerCommand {
  constructor(private readonly client: ModelAdminClient) {
    super();
  }

  async run(args: string[], o: CommonOptions): Promise<void> {
    const entry = await this.client.act(o, 'unload', oneName(args, 'unload'));
    if (o.json) json(entry);
    else write(`Unloaded ${String(entry.id)}\n`);
  }
}

interface PullCommandOptions extends CommonOptions {
  dir?: string;
  name?: string;
  sha256?: string;
  force?: boolean;
}

@SubCommand({
  name: 'pull',
  arguments: '<uri>',
  description: 'Download a GGUF (URL or hf:owner/repo/file.gguf) into MODELS_DIR with node-llama-cpp\'s downloader: progress, resume after interruption, checksum when known',
})
export class ModelPullCommand extends ServerCommand {
  constructor(
    private readonly client: ModelAdminClient,
    private readonly config: AppConfig,
  ) {
    super();
  }

  async run(args: string[], o: PullCommandOptions): Promise<void> {
    if (args.length !== 1) throw new OptionValueError(`model pull takes one URL or hf: URI (got ${args.length})`);
    const dir = o.dir ? resolve(o.dir) : this.config.modelsDir;
    if (!dir) throw new Error('model pull saves into MODELS_DIR: set MODELS_DIR (or pass --dir)');
    const bar = new ProgressBar('Downloading', !o.json);
    // Not on a terminal (logs, CI): a line every 10% instead of a bar.
    let logged = -1;
    const logLine = (done: number, total: number): void => {
      const pct = total > 0 ? Math.floor((done / total) * 10) * 10 : 0;
      if (o.json || process.stderr.isTTY || pct <= logged) return;
      logged = pct;
      process.stderr.write(`Downloading ${args[0]}: ${pct}% (${mb(done)} / ${mb(total)})\n`);
    };
    const controller = new AbortController();
    // Ctrl-C keeps what was downloaded: the same command resumes it.
    const interrupt = (): void => controller.abort(new Error('interrupted'));
    // `on`, not `once`: signal-exit (in node-llama-cpp's dependencies) re-raises the signal when
    // it is the last listener left, which would kill the process before the download is closed.
    process.on('SIGINT', interrupt);
    process.on('SIGTERM', interrupt);
    let result;
    try {
      result = await pullModel({
        uri: args[0],
        dir,
        fileName: o.name,
        sha256: o.sha256,
        force: o.force,
        signal: controller.signal,
        onProgress: (done, total) => {
          bar.update(total > 0 ? done / total : 0, `${mb(done)} / ${mb(total)}`);
          logLine(done, total);
        },
      });
    } catch (err) {
      bar.done();
      if (controller.signal.aborted) {
        throw new Error(`download interrupted; the part downloaded so far is kept (${dir}/*.ipull): run the same command again to resume`);
      }
      throw err;
    } finally {
      process.off('SIGINT', interrupt);
      process.off('SIGTERM', interrupt);
    }
    bar.done();
    // A running server serves the new file at once (it also rescans MODELS_DIR for a name it does not know).
    let refreshed: string;
    try {
      await this.client.act(o, 'refresh', undefined, 10_000);
      refreshed = `the server at ${this.client.url(o)} lists it now`;
    } catch (err) {
      refreshed = err instanceof ServerUnreachable ? 'no server running: it is served from the next start' : `the server did not refresh: ${(err as Error).message}`;
    }
    const id = basename(result.path).replace(/\.gguf$/i, '');
    if (o.json) {
      json({ ...result, id, refreshed });
      return;
    }
    const check = result.verifiedAgainst ? `SHA-256 verified (${result.verifiedAgainst === 'option' ? '--sha256' : 'published by the server'})` : 'no checksum known (SHA-256 printed for the record)';
    write(
      `${result.alreadyPresent ? 'Already present' : 'Downloaded'}: ${result.path} (${mb(result.bytes)})\n` +
        `  model id  ${id}\n  sha256    ${result.sha256}\n  checksum  ${check}\n  server    ${refreshed}\n`,
    );
  }

  @Option({ flags: '--dir <folder>', description: 'Where to save (default MODELS_DIR)' })
  parseDir(v: string): string {
    return v;
  }

  @Option({ flags: '--name <file>', description: 'File name to save as (default the remote name); the model id is the name without .gguf' })
  parseName(v: string): string {
    if (!/^[\w.+-]+\.gguf$/i.test(v)) throw new OptionValueError('--name must be a file name ending in .gguf');
    return v;
  }

  @Option({ flags: '--sha256 <hex>', description: 'Expected SHA-256; a mismatch deletes the file (default: the server\'s, when it publishes one)' })
  parseSha(v: string): string {
    if (!/^[0-9a-fA-F]{64}$/.test(v)) throw new OptionValueError('--sha256 must be 64 hex characters');
    return v;
  }

  @Option({ flags: '--force', description: 'Download again even if the file is already there' })
  parseForce(): boolean {
    return true;
  }
}

@SubCommand({
  name: 'rm',
  arguments: '<model>',
  description: 'Delete a model file from MODELS_DIR (a running server unloads it first, after its in-flight requests)',
})
export class ModelRmCommand extends ServerCommand {
  constructor(
    private readonly client: ModelAdminClient,
    private readonly config: AppConfig,
  ) {
    super();
  }

  async run(args: string[], o: CommonOptions): Promise<void> {
    const name = oneName(args, 'rm');
    const dir = this.config.modelsDir;
    if (!dir) throw new Error('model rm deletes files of MODELS_DIR: set MODELS_DIR');
    const catalog = buildCatalog(this.config);
    const spec = catalog.specs.find((s) => s.id === name || s.aliases.includes(name));
    if (!spec) throw new Error(`no configured model is named ${JSON.stringify(name)}`);
    if (resolve(dirname(spec.path)) !== resolve(dir)) {
      throw new Error(`${spec.id} is ${spec.path}, outside MODELS_DIR (${dir}): remove it from ${spec.source} yourself`);
    }
    if (spec.id === catalog.defaultId) throw new Error(`${spec.id} is the default model; choose another (DEFAULT_MODEL) before removing it`);
    let server = 'no server running';
    try {
      await this.client.act(o, 'unload', spec.id);
      server = `unloaded by the server at ${this.client.url(o)}`;
    } catch (err) {
      if (!(err instanceof ServerUnreachable)) throw err;
    }
    const partial = partialDownload(dir, basename(spec.path));
    rmSync(spec.path, { force: true });
    if (partial) rmSync(partial, { force: true });
    try {
      await this.client.act(o, 'refresh', undefined, 10_000);
    } catch {
      /* no server: nothing to tell */
    }
    if (o.json) json({ id: spec.id, path: spec.path, removed: !existsSync(spec.path), server });
    else write(`Removed ${spec.id} (${spec.path}); ${server}\n`);
  }
}

function formatServerList(list: ModelList): string {
  const head = ['ID', 'KIND', 'STATE', 'MEMORY', 'IN FLIGHT', 'KEEP-ALIVE', 'ALIASES', 'PATH'];
  const rows = list.data.map((m: AdminModel) => [
    `${m.id}${m.default ? ' (default)' : ''}`,
    m.kind,
    m.state + (m.error ? `: ${m.error}` : ''),
    m.memory ? mb(m.memory.ram + m.memory.vram) : '-',
    String(m.in_flight),
    m.keep_alive_seconds === null ? 'forever' : `${m.keep_alive_seconds}s`,
    m.aliases.join(',') || '-',
    m.path,
  ]);
  const budget = list.memory.budget;
  return (
    table(head, rows) +
    `Memory: ${mb(list.memory.used.ram)} RAM${list.memory.used.vram ? ` + ${mb(list.memory.used.vram)} VRAM` : ''} in use (estimates); budget ` +
    `${budget.ram === null ? 'unlimited' : mb(budget.ram)} RAM, ${budget.vram === null ? 'unlimited' : mb(budget.vram)} VRAM\n`
  );
}

function formatCatalog(specs: readonly ModelSpec[], defaultId: string): string {
  const head = ['ID', 'KIND', 'SOURCE', 'ALIASES', 'PATH'];
  return table(
    head,
    specs.map((s) => [`${s.id}${s.id === defaultId ? ' (default)' : ''}`, s.kind, s.source, s.aliases.join(',') || '-', `${s.path}${existsSync(s.path) ? '' : ' (missing)'}`]),
  );
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n') + '\n';
}
