import { Command, CommandRunner } from 'nest-commander';
import { ServingBenchCommand } from './serving-bench.command';

@Command({ name: 'bench', description: 'Benchmarks (not part of CI)', subCommands: [ServingBenchCommand] })
export class BenchCommand extends CommandRunner {
  async run(): Promise<void> {
    this.command.help();
  }
}
