import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Option, SubCommand } from 'nest-commander';
import { projectRoot } from '@app/common';
import { ReferenceBenchCommand } from './reference-bench.command';
import { EngineSettings, llamaServerBinary, RunningServer, startLlamaServer, startOurs } from './bench.processes';
import { ProgressBar } from '../support/progress.bar';
import { distinctPrompt, LoadResult, runLoad, sharedPrefixPrompt } from './load.generator';
import { positiveInt } from '../support/options';

interface ServingOptions {
  model?: string;
  slots?: number;
  threads?: number;
  concurrency?: string;
  requests?: number;
  maxTokens?: number;
  workload?: 'distinct' | 'shared-prefix';
  context?: number;
  batch?: number;
  reference?: boolean;
  llamaServer?: string;
  json?: boolean;
}

interface Row {
  target: string;
  concurrency: number;
  result: LoadResult;
}

/**
 * Streaming load against this server and, in the same run with the same model, slots,
 * threads, context and batch, against llama.cpp's own HTTP server; prints both and the ratios.
 */
@SubCommand({ name: 'serve', description: 'Streaming throughput/latency vs llama.cpp\'s server, same model and settings, same run' })
export class ServingBenchCommand extends ReferenceBenchCommand {
  async run(_args: string[], o: ServingOptions): Promise<void> {
    const model = o.model ?? join(projectRoot(), 'models', 'synth-110m.gguf');
    if (!existsSync(model)) {
      throw new Error(`model ${model} not found; create it with: npm run cli -- model synth --preset 110m`);
    }
    const settings: EngineSettings = {
      model,
      slots: o.slots ?? 8,
      threads: o.threads ?? Math.max(1, availableParallelism() - 1),
      contextPerSlot: o.context ?? 2048,
      batchSize: o.batch ?? 512,
    };
    const levels = (o.concurrency ?? '1,8').split(',').map((c) => positiveInt(c.trim()));
    const maxTokens = o.maxTokens ?? 64;
    const workload = o.workload ?? 'distinct';
    const prompt = workload === 'shared-prefix' ? sharedPrefixPrompt : distinctPrompt;
    const rows: Row[] = [];
    const log = (m: string): void => void process.stderr.write(`${m}\n`);

    const measure = async (server: RunningServer, apiKey?: string): Promise<void> => {
      // Warm-up: first decode allocations, page cache; not measured.
      await runLoad({ url: server.url, apiKey, concurrency: 1, requests: 1, maxTokens: 8, prompt: () => 'Warm up.' });
      for (const concurrency of levels) {
        const requests = o.requests ?? Math.max(8, concurrency * 3);
        log(`  ${server.label}: ${concurrency} concurrent, ${requests} requests x ${maxTokens} tokens (${workload})...`);
        // Each level gets prompts no earlier level sent: a server's prompt cache from the previous
        // level must not stand in for prefill (llama.cpp's server keeps prompt states in RAM).
        const offset = 1000 * (levels.indexOf(concurrency) + 1);
        const bar = new ProgressBar('   ', !o.json);
        const result = await runLoad({
          url: server.url,
          apiKey,
          concurrency,
          requests,
          maxTokens,
          prompt: (i) => prompt(offset + i),
          onProgress: (done, total) => bar.update(done / total, `${done}/${total} requests`),
        });
        bar.done();
        rows.push({ target: server.label, concurrency, result });
        log(`    ${result.tokensPerSecond.toFixed(1)} tok/s, TTFT p99 ${result.ttftMs.p99.toFixed(0)} ms, errors ${result.errors}`);
        for (const sample of result.errorSamples) log(`    error: ${sample}`);
      }
    };

    log(`Model ${model}; ${settings.slots} slots, ${settings.threads} threads, context ${settings.contextPerSlot}/slot, batch ${settings.batchSize}`);
    const ours = await startOurs(settings);
    try {
      await measure(ours, ours.apiKey);
    } finally {
      await ours.stop();
    }
    if (o.reference !== false) {
      const binary = llamaServerBinary(o.llamaServer);
      const ref = await startLlamaServer(binary, settings);
      try {
        await measure(ref);
      } finally {
        await ref.stop();
      }
    }
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ settings, workload, maxTokens, rows }, null, 2)}\n`);
      return;
    }
    process.stdout.write(formatTable(rows));
  }

  @Option({ flags: '--slots <n>', description: 'Parallel slots for both servers (default 8)' })
  parseSlots(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--concurrency <list>', description: 'Comma list of client counts (default 1,8)' })
  parseConcurrency(v: string): string {
    return v;
  }
  @Option({ flags: '--requests <n>', description: 'Requests per level (default max(8, 3 x concurrency))' })
  parseRequests(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--max-tokens <n>', description: 'New tokens per request (default 64)' })
  parseMaxTokens(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--workload <kind>', description: 'distinct | shared-prefix (~540-token common prefix)' })
  parseWorkload(v: string): string {
    if (v !== 'distinct' && v !== 'shared-prefix') throw new Error('--workload must be distinct or shared-prefix');
    return v;
  }
  @Option({ flags: '--context <n>', description: 'Context tokens per slot (default 2048)' })
  parseContext(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--batch <n>', description: 'Decode batch size (default 512)' })
  parseBatch(v: string): number {
    return positiveInt(v);
  }
}

export function formatTable(rows: Row[]): string {
  const head = ['target', 'clients', 'tok/s', 'req/s', 'TTFT p50', 'TTFT p99', 'ITL p50', 'ITL p99', 'errors'];
  const lines = rows.map((r) => [
    r.target,
    String(r.concurrency),
    r.result.tokensPerSecond.toFixed(1),
    r.result.requestsPerSecond.toFixed(2),
    `${r.result.ttftMs.p50.toFixed(0)} ms`,
    `${r.result.ttftMs.p99.toFixed(0)} ms`,
    `${r.result.itlMs.p50.toFixed(1)} ms`,
    `${r.result.itlMs.p99.toFixed(1)} ms`,
    String(r.result.errors),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  let out = `${fmt(head)}\n|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|\n${lines.map(fmt).join('\n')}\n`;
  const ours = rows.filter((r) => r.target === 'this server');
  const ref = rows.filter((r) => r.target !== 'this server');
  if (ref.length) {
    out += '\nRatios (this server / llama.cpp server):\n';
    for (const o of ours) {
      const r = ref.find((x) => x.concurrency === o.concurrency);
      if (!r) continue;
      out +=
        `  ${o.concurrency} clients: throughput ${(o.result.tokensPerSecond / r.result.tokensPerSecond).toFixed(2)}x, ` +
        `TTFT p50 ${(o.result.ttftMs.p50 / r.result.ttftMs.p50).toFixed(2)}x, TTFT p99 ${(o.result.ttftMs.p99 / r.result.ttftMs.p99).toFixed(2)}x, ` +
        `ITL p50 ${(o.result.itlMs.p50 / r.result.itlMs.p50).toFixed(2)}x\n`;
    }
  }
  return out;
}
