import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Option, SubCommand } from 'nest-commander';
import { KV_CACHE_TYPES, projectRoot } from '@app/common';
import type { KvCacheType } from '@app/common';
import { BaseCommand, OptionValueError } from '../base.command';
import { positiveInt } from '../support/options';
import { BenchServer, startBenchServer } from './bench.support';
import { markdownTable, spread } from './bench.format';
import { distinctPrompt, longPrompt, runLoad } from './load.generator';

interface KvOptions {
  model?: string;
  configs?: string;
  slots?: number;
  context?: number;
  threads?: number;
  rounds?: number;
  concurrency?: number;
  requests?: number;
  maxTokens?: number;
  json?: boolean;
}

/** One memory setting: flash attention and the K / V cache types. */
interface KvConfig {
  readonly label: string;
  readonly flashAttention: 'on' | 'off';
  readonly k: KvCacheType;
  readonly v: KvCacheType;
}

export interface KvRow {
  readonly config: KvConfig;
  /** Server process RSS after the load and the warm-up (VmRSS), bytes. */
  readonly rssBytes: number | null;
  /** Largest RSS seen during the rounds (VmHWM), bytes. */
  readonly peakRssBytes: number | null;
  /** node-llama-cpp's estimate of the model with this context (what the memory budget counts). */
  readonly estimateBytes: number | null;
  /** Decode throughput of each round (concurrent streams, short prompts), tokens/s. */
  readonly decodeTokS: number[];
  /** Time to first token of a ~1,100-token prompt, each round, ms. */
  readonly longPromptTtftMs: number[];
  readonly errors: number;
}

const DEFAULT_CONFIGS = 'off:f16:f16,on:f16:f16,on:q8_0:q8_0,on:q4_0:q4_0,off:q8_0:f16';

/** `fa:k:v` items (fa = on | off). */
export function parseKvConfigs(text: string): KvConfig[] {
  return text.split(',').map((item) => {
    const [fa, k, v] = item.trim().split(':');
    const types = KV_CACHE_TYPES as readonly string[];
    if ((fa !== 'on' && fa !== 'off') || !types.includes(k) || !types.includes(v ?? k)) {
      throw new OptionValueError(`--configs items are fa:k:v with fa on|off and k, v in ${KV_CACHE_TYPES.join(', ')} (got ${JSON.stringify(item)})`);
    }
    if (fa === 'off' && (v ?? k) !== 'f16') throw new OptionValueError(`${item}: a quantized V cache needs flash attention (llama.cpp)`);
    return { label: `FA ${fa}, K ${k}, V ${v ?? k}`, flashAttention: fa, k: k as KvCacheType, v: (v ?? k) as KvCacheType };
  });
}

/**
 * Flash attention and KV-cache quantization, measured: for each setting, this server is started
 * on the same model, slots and context; its memory is read from the kernel (VmRSS after the load
 * and a warm-up, VmHWM at the end) beside node-llama-cpp's estimate, and its speed over several
 * rounds that take the settings in turn (decode throughput with concurrent streams, and the
 * first-token time of a long prompt), reported as median and range because a shared machine is
 * noisy.
 */
@SubCommand({ name: 'kv', description: 'Flash attention and KV-cache types (f16, q8_0, q4_0): memory (RSS, estimate) and speed over several rounds' })
export class KvBenchCommand extends BaseCommand {
  async run(_args: string[], o: KvOptions): Promise<void> {
    const model = o.model ?? join(projectRoot(), 'models', 'synth-110m.gguf');
    if (!existsSync(model)) throw new Error(`model ${model} not found; create it with: npm run cli -- model synth --preset 110m`);
    const configs = parseKvConfigs(o.configs ?? DEFAULT_CONFIGS);
    const slots = o.slots ?? 4;
    const context = o.context ?? 4096;
    const rounds = o.rounds ?? 3;
    const concurrency = o.concurrency ?? slots;
    const requests = o.requests ?? concurrency * 2;
    const maxTokens = o.maxTokens ?? 48;
    const log = (m: string): void => void process.stderr.write(`${m}\n`);
    log(`Model ${model}; ${slots} slots x ${context} tokens, THREADS ${o.threads ?? 'default'}; ${rounds} rounds per setting`);
    // Every setting's server runs for the whole benchmark and the rounds take them in turn: on a
    // shared machine the load changes over minutes, and interleaving spreads it over all settings
    // instead of favouring whichever ran in a quiet moment. Idle servers take no CPU.
    const servers: (BenchServer | null)[] = [];
    const rows: { -readonly [K in keyof KvRow]: KvRow[K] }[] = [];
    try {
      for (const config of configs) {
        log(`  ${config.label}: starting...`);
        let server: BenchServer | null = null;
        let rssBytes: number | null = null;
        let estimateBytes: number | null = null;
        try {
          server = await startBenchServer({
            MODEL_PATH: model,
            PARALLEL_SLOTS: String(slots),
            CONTEXT_SIZE: String(context),
            ...(o.threads === undefined ? {} : { THREADS: String(o.threads) }),
            FLASH_ATTENTION: config.flashAttention,
            KV_CACHE_TYPE_K: config.k,
            KV_CACHE_TYPE_V: config.v,
            CACHE_ENABLED: 'false',
            QUEUE_MAX: '10000',
            GPU: process.env.GPU ?? 'auto',
          });
          // Warm-up, not measured: the weights paged in, the thread policy past its first estimates.
          await runLoad({ url: server.url, apiKey: server.key, concurrency, requests, maxTokens, prompt: (i) => distinctPrompt(-1000 - i) });
          await runLoad({ url: server.url, apiKey: server.key, concurrency: 1, requests: 1, maxTokens: 4, prompt: () => `warm. ${longPrompt(1100)}` });
          rssBytes = server.memory()?.rss ?? null;
          const models = (await (await fetch(`${server.url}/admin/models`, { headers: { Authorization: `Bearer ${server.key}` } })).json()) as {
            data: { memory: { ram: number; vram: number } | null }[];
          };
          const estimate = models.data[0]?.memory;
          estimateBytes = estimate ? estimate.ram + estimate.vram : null;
        } catch (err) {
          log(`    failed: ${(err as Error).message.split('\n')[0]}`);
          await server?.stop();
          server = null;
        }
        servers.push(server);
        rows.push({ config, rssBytes, peakRssBytes: null, estimateBytes, decodeTokS: [], longPromptTtftMs: [], errors: server ? 0 : -1 });
      }
      for (let round = 0; round < rounds; round++) {
        for (const [i, server] of servers.entries()) {
          if (!server) continue;
          const row = rows[i];
          const load = await runLoad({ url: server.url, apiKey: server.key, concurrency, requests, maxTokens, prompt: (k) => distinctPrompt(round * 1000 + k) });
          // A long prompt (prefill-bound): distinct each round, so no prefix is reused.
          const long = await runLoad({ url: server.url, apiKey: server.key, concurrency: 1, requests: 1, maxTokens: 4, prompt: () => `${round}. ${longPrompt(1100)}` });
          row.decodeTokS.push(load.tokensPerSecond);
          row.longPromptTtftMs.push(long.ttftMs.p50);
          row.errors += load.errors + long.errors;
          log(`    round ${round + 1}, ${row.config.label}: decode ${load.tokensPerSecond.toFixed(1)} tok/s, long-prompt TTFT ${long.ttftMs.p50.toFixed(0)} ms`);
        }
      }
    } finally {
      rows.forEach((r, i) => (r.peakRssBytes = servers[i]?.memory()?.peak ?? null));
      await Promise.all(servers.map((s) => s?.stop()));
    }
    const results: readonly KvRow[] = rows;
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ model, slots, context, threads: o.threads ?? null, rounds, concurrency, requests, maxTokens, rows: results }, null, 2)}\n`);
      return;
    }
    process.stdout.write(formatKvTable(results));
  }

  @Option({ flags: '--model <path>', description: 'GGUF model (default models/synth-110m.gguf)' })
  parseModel(v: string): string {
    return v;
  }
  @Option({ flags: '--configs <list>', description: `Comma list of fa:k:v (default ${DEFAULT_CONFIGS})` })
  parseConfigs(v: string): string {
    parseKvConfigs(v);
    return v;
  }
  @Option({ flags: '--slots <n>', description: 'Parallel slots (default 4)' })
  parseSlots(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--context <n>', description: 'Context tokens per slot (default 4096)' })
  parseContext(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--threads <n>', description: 'THREADS of the server (default its own)' })
  parseThreads(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--rounds <n>', description: 'Measurement rounds per setting (default 3)' })
  parseRounds(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--concurrency <n>', description: 'Concurrent streams in the decode rounds (default: slots)' })
  parseConcurrency(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--requests <n>', description: 'Requests per decode round (default 2 x concurrency)' })
  parseRequests(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--max-tokens <n>', description: 'New tokens per decode request (default 48)' })
  parseMaxTokens(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--json', description: 'Machine-readable output' })
  parseJson(): boolean {
    return true;
  }
}

export function formatKvTable(rows: readonly KvRow[]): string {
  const mib = (b: number | null): string => (b === null ? '–' : `${(b / 1024 ** 2).toFixed(0)} MiB`);
  const head = ['setting', 'RSS after load', 'peak RSS', 'estimate', 'decode tok/s median (range)', 'long-prompt TTFT ms median (range)', 'errors'];
  return markdownTable(
    head,
    rows.map((r) => [r.config.label, mib(r.rssBytes), mib(r.peakRssBytes), mib(r.estimateBytes), spread(r.decodeTokS, 1), spread(r.longPromptTtftMs, 0), String(r.errors)]),
  );
}
