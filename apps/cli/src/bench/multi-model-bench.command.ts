import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Option, SubCommand } from 'nest-commander';
import { projectRoot } from '@app/common';
import { BaseCommand, OptionValueError } from '../base.command';
import { positiveInt } from '../support/options';
import { startBenchServer } from './bench.support';
import { markdownTable, spread } from './bench.format';
import { distinctPrompt, runLoad } from './load.generator';

interface MultiOptions {
  model?: string;
  threads?: string;
  rounds?: number;
  concurrency?: number;
  requests?: number;
  maxTokens?: number;
  json?: boolean;
}

export interface MultiRow {
  /** Threads of each model's pool: `auto` (every core, adaptive policy) or a fixed number. */
  readonly threads: string;
  /** Tokens/s of model a alone, per round. */
  readonly alone: number[];
  /** Tokens/s of a and of b while both stream at once, per round (sum = the server's). */
  readonly togetherA: number[];
  readonly togetherB: number[];
}

/**
 * Several models on one CPU: two chat models of one server (the same GGUF under two ids, each
 * with its own context, scheduler and engine threadpool) streaming alone and at the same time,
 * for each thread setting per model (`auto`: every core with the adaptive policy, what a user
 * gets; a number: that many threads, fixed). Several rounds, medians and ranges.
 */
@SubCommand({ name: 'multi', description: 'Two models of one server streaming alone and together: throughput per thread setting per model' })
export class MultiModelBenchCommand extends BaseCommand {
  async run(_args: string[], o: MultiOptions): Promise<void> {
    const model = o.model ?? join(projectRoot(), 'models', 'synth-110m.gguf');
    if (!existsSync(model)) throw new Error(`model ${model} not found; create it with: npm run cli -- model synth --preset 110m`);
    const settings = (o.threads ?? 'auto,1').split(',').map((t) => t.trim());
    for (const t of settings) if (t !== 'auto' && !/^[1-9]\d*$/.test(t)) throw new OptionValueError(`--threads items are auto or a number (got ${JSON.stringify(t)})`);
    const rounds = o.rounds ?? 3;
    const concurrency = o.concurrency ?? 2;
    const requests = o.requests ?? concurrency * 3;
    const maxTokens = o.maxTokens ?? 48;
    const log = (m: string): void => void process.stderr.write(`${m}\n`);
    const rows: MultiRow[] = [];
    for (const threads of settings) {
      const dir = mkdtempSync(join(tmpdir(), 'bench-multi-'));
      const file = join(dir, 'models.yaml');
      const entry = (id: string): string => `  - id: ${id}\n    path: ${JSON.stringify(model)}\n    slots: ${concurrency}\n    context_size: 1024\n${threads === 'auto' ? '' : `    threads: ${threads}\n`}`;
      writeFileSync(file, `default: a\nmodels:\n${entry('a')}${entry('b')}`);
      log(`  threads per model ${threads}: starting...`);
      const server = await startBenchServer({ MODELS_FILE: file, CACHE_ENABLED: 'false', QUEUE_MAX: '10000', MODEL_KEEP_ALIVE: 'forever', GPU: process.env.GPU ?? 'auto' });
      const row: MultiRow = { threads, alone: [], togetherA: [], togetherB: [] };
      try {
        const load = (id: string, offset: number) =>
          runLoad({ url: server.url, apiKey: server.key, concurrency, requests, maxTokens, body: { model: id }, prompt: (i) => distinctPrompt(offset + i) });
        // Warm-up, not measured: both models loaded, their pools and policies past their first steps.
        await Promise.all([load('a', 0), load('b', 0)]);
        for (let round = 0; round < rounds; round++) {
          const alone = await load('a', 1000 * (round + 1));
          const [a, b] = await Promise.all([load('a', 100_000 + 1000 * round), load('b', 200_000 + 1000 * round)]);
          row.alone.push(alone.tokensPerSecond);
          row.togetherA.push(a.tokensPerSecond);
          row.togetherB.push(b.tokensPerSecond);
          log(`    round ${round + 1}: a alone ${alone.tokensPerSecond.toFixed(1)} tok/s; together a ${a.tokensPerSecond.toFixed(1)} + b ${b.tokensPerSecond.toFixed(1)} tok/s`);
        }
      } finally {
        await server.stop();
      }
      rows.push(row);
    }
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ model, rounds, concurrency, requests, maxTokens, rows }, null, 2)}\n`);
      return;
    }
    const sum = (r: MultiRow): number[] => r.togetherA.map((a, i) => a + r.togetherB[i]);
    const head = ['threads per model', 'a alone tok/s', 'together: a tok/s', 'together: b tok/s', 'together: total tok/s'];
    process.stdout.write(markdownTable(head, rows.map((r) => [r.threads, spread(r.alone), spread(r.togetherA), spread(r.togetherB), spread(sum(r))])));
  }

  @Option({ flags: '--model <path>', description: 'GGUF model served twice (default models/synth-110m.gguf)' })
  parseModel(v: string): string {
    return v;
  }
  @Option({ flags: '--threads <list>', description: 'Thread settings per model to compare: auto and/or numbers (default auto,1)' })
  parseThreads(v: string): string {
    return v;
  }
  @Option({ flags: '--rounds <n>', description: 'Rounds per setting (default 3)' })
  parseRounds(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--concurrency <n>', description: 'Streams per model (default 2; also its slots)' })
  parseConcurrency(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--requests <n>', description: 'Requests per model per round (default 3 x concurrency)' })
  parseRequests(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--max-tokens <n>', description: 'New tokens per request (default 48)' })
  parseMaxTokens(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--json', description: 'Machine-readable output' })
  parseJson(): boolean {
    return true;
  }
}
