import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Command, CommandRunner, Option, SubCommand } from 'nest-commander';
import { ServerCommand } from '../base.command';
import { RetrievalClient, ServerTarget } from './retrieval.client';

interface CommonOptions extends ServerTarget {
  json?: boolean;
}


@SubCommand({ name: 'list', description: 'List the collections with their sizes' })
export class CollectionsListCommand extends ServerCommand {
  constructor(private readonly client: RetrievalClient) {
    super();
  }

  async run(_args: string[], options: CommonOptions): Promise<void> {
    const { data } = await this.client.list(options);
    if (options.json) return void process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
    if (data.length === 0) return void process.stdout.write('No collections.\n');
    const width = Math.max(4, ...data.map((c) => c.name.length));
    process.stdout.write(`${'name'.padEnd(width)}  chunks  dimension\n`);
    for (const c of data) process.stdout.write(`${c.name.padEnd(width)}  ${String(c.chunks).padStart(6)}  ${String(c.dimension).padStart(9)}\n`);
  }
}

@SubCommand({ name: 'create', arguments: '<name>', description: 'Create a collection' })
export class CollectionsCreateCommand extends ServerCommand {
  constructor(private readonly client: RetrievalClient) {
    super();
  }

  async run([name]: string[], options: CommonOptions): Promise<void> {
    const created = await this.client.create(options, name);
    process.stdout.write(options.json ? `${JSON.stringify(created, null, 2)}\n` : `Created collection ${name}\n`);
  }
}

@SubCommand({ name: 'delete', arguments: '<name>', description: 'Delete a collection and its data' })
export class CollectionsDeleteCommand extends ServerCommand {
  constructor(private readonly client: RetrievalClient) {
    super();
  }

  async run([name]: string[], options: CommonOptions): Promise<void> {
    const deleted = await this.client.delete(options, name);
    process.stdout.write(options.json ? `${JSON.stringify(deleted, null, 2)}\n` : `Deleted collection ${name}\n`);
  }
}

@Command({
  name: 'collections',
  description: 'Retrieval collections (through the running server)',
  subCommands: [CollectionsListCommand, CollectionsCreateCommand, CollectionsDeleteCommand],
})
export class CollectionsCommand extends CommandRunner {
  async run(): Promise<void> {
    this.command.help();
  }
}

@SubCommand({
  name: 'add',
  arguments: '<files...>',
  description: 'Upload text files into a collection (chunked and embedded by the server); the file name is the document id',
})
export class DocsAddCommand extends ServerCommand {
  constructor(private readonly client: RetrievalClient) {
    super();
  }

  async run(files: string[], options: CommonOptions & { collection: string }): Promise<void> {
    const bar = new ProgressBar(files.length);
    const results: { file: string; document_id?: string; chunks?: number; error?: string }[] = [];
    for (const [i, file] of files.entries()) {
      bar.update(i, file);
      try {
        const text = await readFile(file, 'utf8');
        const id = basename(file).replace(/[^\w.:@-]/g, '_').slice(0, 128);
        const added = await this.client.addDocument(options, options.collection, { text, id, metadata: { source: basename(file) } });
        results.push({ file, ...added });
      } catch (err) {
        results.push({ file, error: (err as Error).message });
      }
    }
    bar.update(files.length, '');
    bar.done();
    if (options.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    else for (const r of results) process.stdout.write(r.error ? `FAILED ${r.file}: ${r.error}\n` : `added ${r.file} as ${r.document_id} (${r.chunks} chunks)\n`);
    const failed = results.filter((r) => r.error).length;
    if (failed > 0) throw new Error(`${failed} of ${files.length} files failed`);
  }

  @Option({ flags: '-c, --collection <name>', description: 'Target collection', required: true })
  parseCollection(value: string): string {
    return value;
  }
}

@Command({ name: 'docs', description: 'Documents of retrieval collections (through the running server)', subCommands: [DocsAddCommand] })
export class DocsCommand extends CommandRunner {
  async run(): Promise<void> {
    this.command.help();
  }
}

/** `[#####-----] 3/10 file` on stderr, redrawn in place on a terminal, one line per step otherwise. */
class ProgressBar {
  readonly #tty = process.stderr.isTTY === true;

  constructor(private readonly total: number) {}

  update(done: number, label: string): void {
    const width = 30;
    const filled = this.total === 0 ? width : Math.round((width * done) / this.total);
    const line = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${this.total}${label ? ` ${label}` : ''}`;
    process.stderr.write(this.#tty ? `\r\x1b[2K${line}` : `${line}\n`);
  }

  done(): void {
    if (this.#tty) process.stderr.write('\n');
  }
}
