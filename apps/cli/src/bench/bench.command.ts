import { Command, CommandRunner } from 'nest-commander';
import { InterferenceBenchCommand } from './interference-bench.command';
import { ServingBenchCommand } from './serving-bench.command';

@Command({ name: 'bench', description: 'Benchmarks (not part of CI)', subCommands: [ServingBenchCommand, InterferenceBenchCommand] })
export class BenchCommand extends CommandRunner {
  async run(): Promise<void> {
    this.command.help();
  }
}
