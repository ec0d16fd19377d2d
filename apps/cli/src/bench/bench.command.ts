import { Command, CommandRunner } from 'nest-commander';
import { CacheBenchCommand } from './cache-bench.command';

/** Parent of the benchmarks; each is a subcommand (`npm run cli -- bench <name>`). */
@Command({ name: 'bench', description: 'Benchmarks that print ratios against a reference measured in the same run', subCommands: [CacheBenchCommand] })
export class BenchCommand extends CommandRunner {
  async run(): Promise<void> {
    this.command.help();
  }
}
