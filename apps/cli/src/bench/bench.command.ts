import { Command } from 'nest-commander';
import { BaseCommand } from '../base.command';
import { CacheBenchCommand } from './cache-bench.command';
import { InterferenceBenchCommand } from './interference-bench.command';
import { KvBenchCommand } from './kv-bench.command';
import { MultiModelBenchCommand } from './multi-model-bench.command';
import { ServingBenchCommand } from './serving-bench.command';

/** Parent of the benchmarks; each prints ratios against a reference measured in the same run. */
@Command({
  name: 'bench',
  description: 'Benchmarks that print ratios against a reference measured in the same run (not part of CI)',
  subCommands: [ServingBenchCommand, InterferenceBenchCommand, CacheBenchCommand, KvBenchCommand, MultiModelBenchCommand],
})
export class BenchCommand extends BaseCommand {
  async run(): Promise<void> {
    this.command.help();
  }
}
