import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Option, SubCommand } from 'nest-commander';
import { projectRoot } from '@app/common';
import { ReferenceBenchCommand } from './reference-bench.command';
import { defaultReferenceThreads, EngineSettings, llamaServerBinary, RunningServer, startLlamaServer, startOurs } from './bench.processes';
import { InterferenceResult, runInterference } from './load.generator';
import { positiveInt } from '../support/options';

interface InterferenceOptions {
  model?: string;
  streams?: number;
  promptTokens?: number;
  threads?: number;
  referenceThreads?: number[];
  reference?: boolean;
  llamaServer?: string;
  json?: boolean;
}

/** Inter-token latency of running streams while a long prompt arrives: ours vs llama.cpp's server. */
@SubCommand({ name: 'interference', description: 'Inter-token latency of running streams while a ~2,000-token prompt is evaluated' })
export class InterferenceBenchCommand extends ReferenceBenchCommand {
  async run(_args: string[], o: InterferenceOptions): Promise<void> {
    const model = o.model ?? join(projectRoot(), 'models', 'synth-110m.gguf');
    if (!existsSync(model)) throw new Error(`model ${model} not found; create it with: npm run cli -- model synth --preset 110m`);
    const streams = o.streams ?? 4;
    const settings: EngineSettings = {
      model,
      slots: streams + 1,
      threads: o.threads,
      contextPerSlot: 4096,
      batchSize: 512,
    };
    const results: { target: string; result: InterferenceResult }[] = [];
    const measure = async (server: RunningServer, apiKey?: string): Promise<void> => {
      process.stderr.write(`  ${server.label}: ${streams} streams, then a ${o.promptTokens ?? 2000}-token prompt...\n`);
      results.push({ target: server.label, result: await runInterference({ url: server.url, apiKey, streams, promptTokens: o.promptTokens ?? 2000 }) });
    };
    const ours = await startOurs(settings);
    try {
      await measure(ours, ours.apiKey);
    } finally {
      await ours.stop();
    }
    if (o.reference !== false) {
      const binary = llamaServerBinary(o.llamaServer);
      for (const threads of o.referenceThreads ?? defaultReferenceThreads()) {
        const ref = await startLlamaServer(binary, settings, threads);
        try {
          await measure(ref);
        } finally {
          await ref.stop();
        }
      }
    }
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ settings, results }, null, 2)}\n`);
      return;
    }
    const rows = results.map(({ target, result: r }) =>
      `| ${target} | ${r.longPromptTokens} | ${r.longPromptTtftMs.toFixed(0)} ms | ${r.before.p50.toFixed(1)} / ${r.before.p99.toFixed(1)} ms | ` +
      `${r.during.p50.toFixed(1)} / ${r.during.p99.toFixed(1)} / ${r.during.max.toFixed(0)} ms |`,
    );
    process.stdout.write(
      `| target | long prompt tokens | its TTFT | stream ITL before p50 / p99 | stream ITL during p50 / p99 / max |\n|---|---|---|---|---|\n${rows.join('\n')}\n`,
    );
  }

  @Option({ flags: '--streams <n>', description: 'Running streams (default 4)' })
  parseStreams(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--prompt-tokens <n>', description: 'Length of the arriving prompt (default 2000)' })
  parsePromptTokens(v: string): number {
    return positiveInt(v);
  }
}
