import { Option } from 'nest-commander';
import { BaseCommand } from '../base.command';
import { positiveInt } from '../support/options';

/**
 * The options of the benchmarks that run the same model in this server and in llama.cpp's own
 * (`bench serve`, `bench interference`); nest-commander reads options from the whole prototype
 * chain, so each benchmark declares only its own.
 */
export abstract class ReferenceBenchCommand extends BaseCommand {
  @Option({ flags: '--model <path>', description: 'GGUF model (default models/synth-110m.gguf)' })
  parseModel(v: string): string {
    return v;
  }
  @Option({ flags: '--threads <n>', description: "This server's THREADS (default: its own default, as a user gets it)" })
  parseThreads(v: string): number {
    return positiveInt(v);
  }
  @Option({
    flags: '--reference-threads <list>',
    description: "llama.cpp server thread counts to measure; ratios use the best one per level (default: cores - 1 and cores)",
  })
  parseReferenceThreads(v: string): number[] {
    return [...new Set(v.split(',').map((t) => positiveInt(t.trim())))];
  }
  @Option({ flags: '--no-reference', description: 'Skip llama.cpp\'s server' })
  parseNoReference(): boolean {
    return false;
  }
  @Option({ flags: '--llama-server <path>', description: 'Use this llama-server binary instead of building one' })
  parseLlamaServer(v: string): string {
    return v;
  }
  @Option({ flags: '--json', description: 'Machine-readable output' })
  parseJson(): boolean {
    return true;
  }
}
