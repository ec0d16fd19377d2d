import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Option, SubCommand } from 'nest-commander';
import { projectRoot } from '@app/common';
import { ReferenceBenchCommand } from './reference-bench.command';
import { defaultReferenceThreads, EngineSettings, llamaServerBinary, RunningServer, startLlamaServer, startOurs, waitQuiet } from './bench.processes';
import { ProgressBar } from '../support/progress.bar';
import { chatMaxTokens, distinctPrompt, LoadResult, runLoad, sharedPrefixPrompt } from './load.generator';
import { positiveInt } from '../support/options';

interface ServingOptions {
  model?: string;
  rounds?: number;
  warmupRounds?: number;
  slots?: number;
  threads?: number;
  referenceThreads?: number[];
  concurrency?: string;
  requests?: number;
  maxTokens?: number;
  workload?: 'distinct' | 'shared-prefix' | 'chat';
  thinkMs?: number;
  context?: number;
  batch?: number;
  reference?: boolean;
  llamaServer?: string;
  json?: boolean;
}

/** Per-step engine figures of this server over one level, from its /metrics (deltas). */
export interface StepFigures {
  readonly steps: number;
  /** Mean tokens per decode call. */
  readonly tokensPerStep: number;
  /** Mean wall time of a decode call as the loop saw it, ms. */
  readonly stepMs: number;
  /** Mean engine compute per decode call (llama_decode), ms; null without the engine addon. */
  readonly computeMs: number | null;
  /** Mean per-step host overhead (everything but compute, back-to-back steps only), ms. */
  readonly hostMs: number | null;
  /**
   * Median of the same, ms, interpolated in its histogram's bucket as Prometheus'
   * histogram_quantile does: the steps of a run, without the few where the loop stopped to
   * take a new request (a run restart costs a millisecond or more and lifts the mean).
   */
  readonly hostP50Ms: number | null;
  /**
   * CPU time of the server's main thread over the level (llm_event_loop_cpu_seconds_total), ms;
   * null where the server does not export it (not Linux). Divided by the tokens the clients got,
   * it is what Node's thread costs a token: on 2 cores each of its microseconds is taken from a
   * decode (docs/PERFORMANCE.md, 2026-12-03).
   */
  readonly loopCpuMs: number | null;
}

export interface Row {
  target: string;
  concurrency: number;
  result: LoadResult;
  steps?: StepFigures;
  /** Every round's result, in the order they ran (the row's own `result` is the median one). */
  rounds?: LoadResult[];
}

const OURS = 'this server';

/** Unmeasured rounds of every level before the measured ones (--warmup-rounds). */
const DEFAULT_WARMUP_ROUNDS = 1;
/** Warm-up rounds' prompt numbers start this far above the measured rounds' (10,000 a level, 1,000 a round). */
const WARMUP_PROMPT_OFFSET = 1_000_000;

/** Mean pause of a `chat` client before each request, ms. */
const DEFAULT_THINK_MS = 300;

/**
 * Streaming load against this server with its defaults and, in the same run with the same
 * model, slots, context and batch, against llama.cpp's own HTTP server at each reference thread
 * count, all running at once and taking each level in turn; prints every row (the median of
 * `--rounds`), this server's per-step host overhead, and ratios against the best reference at
 * each level.
 */
@SubCommand({ name: 'serve', description: "Streaming throughput/latency vs llama.cpp's server (best of its thread settings), same model, same run" })
export class ServingBenchCommand extends ReferenceBenchCommand {
  async run(_args: string[], o: ServingOptions): Promise<void> {
    const model = o.model ?? join(projectRoot(), 'models', 'synth-110m.gguf');
    if (!existsSync(model)) {
      throw new Error(`model ${model} not found; create it with: npm run cli -- model synth --preset 110m`);
    }
    const settings: EngineSettings = {
      model,
      slots: o.slots ?? 8,
      threads: o.threads,
      contextPerSlot: o.context ?? 2048,
      batchSize: o.batch ?? 512,
    };
    const referenceThreads = o.referenceThreads ?? defaultReferenceThreads();
    const levels = (o.concurrency ?? '1,2,4,8').split(',').map((c) => positiveInt(c.trim()));
    const maxTokens = o.maxTokens ?? 64;
    const workload = o.workload ?? 'distinct';
    // Request i of a round whose prompt numbers start at `set` (promptOffset): shared-prefix rounds share no prefix.
    const prompt: (i: number, set: number) => string = workload === 'shared-prefix' ? sharedPrefixPrompt : distinctPrompt;
    // chat: answers of different lengths and clients that pause between requests (open slots
    // come and go at random steps, unlike closed-loop clients that run in waves).
    const thinkMs = o.thinkMs ?? (workload === 'chat' ? DEFAULT_THINK_MS : 0);
    const maxTokensOf = workload === 'chat' ? (i: number) => chatMaxTokens(maxTokens, i) : undefined;
    const rows: Row[] = [];
    const log = (m: string): void => void process.stderr.write(`${m}\n`);

    const rounds = o.rounds ?? 1;
    const warmupRounds = o.warmupRounds ?? DEFAULT_WARMUP_ROUNDS;
    log(
      `Model ${model}; ${settings.slots} slots, this server's THREADS ${settings.threads ?? 'default'}, ` +
        `llama-server -t ${referenceThreads.join(' and -t ')}, context ${settings.contextPerSlot}/slot, batch ${settings.batchSize}, ` +
        `${rounds} round(s) per level after ${warmupRounds} unmeasured, servers taken in turn (each once the one before is idle)`,
    );
    // Every server runs at once (idle but one) and they take each level in turn, round after
    // round: a slow spell of the machine then hits all of them alike.
    const servers: { server: RunningServer; apiKey?: string; ours: boolean }[] = [];
    try {
      const ours = await startOurs(settings);
      servers.push({ server: ours, apiKey: ours.apiKey, ours: true });
      const backend = await servedBackend(ours.url);
      if (o.reference !== false) {
        // On a GPU, the reference runs on the same GPU: a CUDA build of llama-server, all layers offloaded.
        const gpu = backend !== 'cpu';
        if (gpu) log(`  this server runs on ${backend}: llama-server gets a CUDA build and -ngl 999`);
        const binary = llamaServerBinary(o.llamaServer, gpu);
        for (const threads of referenceThreads) servers.push({ server: await startLlamaServer(binary, settings, threads, gpu), ours: false });
      }
      for (const { server, apiKey } of servers) {
        // Warm-up: first decode allocations, page cache; not measured.
        await runLoad({ url: server.url, apiKey, concurrency: 1, requests: 1, maxTokens: 8, prompt: () => 'Warm up.' });
      }
      const requestsAt = (concurrency: number): number => o.requests ?? Math.max(16, concurrency * 4);
      /** One server's round at one level: the load, and this server's step figures over it. */
      const runRound = async ({ server, apiKey, ours }: (typeof servers)[number], concurrency: number, promptOf: (i: number) => string): Promise<Row> => {
        const bar = new ProgressBar('   ', !o.json);
        const before = ours ? await scrapeSteps(server.url) : null;
        const result = await runLoad({
          url: server.url,
          apiKey,
          concurrency,
          requests: requestsAt(concurrency),
          maxTokens,
          maxTokensOf,
          thinkMs,
          prompt: promptOf,
          onProgress: (done, total) => bar.update(done / total, `${done}/${total} requests`),
        });
        bar.done();
        const steps = before ? stepDelta(before, await scrapeSteps(server.url)) : undefined;
        // The next round (another server's) starts on quiet cores: llama-server's threads spin
        // for work for a while after its last request (waitQuiet).
        await waitQuiet(() => server.cpuMs());
        return { target: server.label, concurrency, result, steps };
      };
      // Unmeasured rounds of every level first, the same for every server: this server's
      // JavaScript is compiled by V8 as it runs and costs Node's thread more for its first few
      // hundred requests (docs/PERFORMANCE.md), which a server in service has long passed. Their
      // figures are printed, so the cold start stays visible (--warmup-rounds 0 measures it).
      for (let round = 0; round < warmupRounds; round++) {
        for (const [levelIndex, concurrency] of levels.entries()) {
          const offset = promptOffset(levelIndex, round, true);
          for (const entry of servers) {
            const row = await runRound(entry, concurrency, (i) => warmupPrompt(prompt(offset + i, offset)));
            log(`  warm-up ${round + 1}/${warmupRounds}, ${entry.server.label}, ${concurrency} concurrent (not counted): ${roundSummary(row)}`);
          }
        }
      }
      for (const [levelIndex, concurrency] of levels.entries()) {
        // 16 at least: a TTFT p50 of 8 requests (2 clients: 4 pairs that arrive together) moved
        // by 0.3x between runs of the same code.
        const requests = requestsAt(concurrency);
        const perServer = new Map<string, Row[]>();
        for (let round = 0; round < rounds; round++) {
          const offset = promptOffset(levelIndex, round, false);
          for (const entry of servers) {
            log(
              `  ${entry.server.label}: ${concurrency} concurrent, ${requests} requests x ${maxTokensOf ? `${maxTokensOf(0)}-${2 * maxTokens - 1}` : maxTokens} tokens (${workload}` +
                `${thinkMs ? `, ${thinkMs} ms mean pause` : ''}), round ${round + 1}/${rounds}...`,
            );
            const row = await runRound(entry, concurrency, (i) => prompt(offset + i, offset));
            perServer.set(row.target, [...(perServer.get(row.target) ?? []), row]);
            log(`    ${roundSummary(row)}`);
            for (const sample of row.result.errorSamples) log(`    error: ${sample}`);
          }
        }
        // The median round of each server (by throughput) stands for it at this level.
        for (const runs of perServer.values()) rows.push({ ...medianRound(runs), rounds: runs.map((r) => r.result) });
      }
    } finally {
      await Promise.all(servers.map(({ server }) => server.stop()));
    }
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ settings, referenceThreads, workload, maxTokens, thinkMs, warmupRounds, rows }, null, 2)}\n`);
      return;
    }
    process.stdout.write(formatTable(rows));
  }

  @Option({ flags: '--slots <n>', description: 'Parallel slots for both servers (default 8)' })
  parseSlots(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--rounds <n>', description: 'Rounds per level, servers taken in turn; the median round counts (default 1)' })
  parseRounds(v: string): number {
    return positiveInt(v);
  }
  @Option({
    flags: '--warmup-rounds <n>',
    description: `Unmeasured rounds of every level each server gets first, with prompts of their own (default ${DEFAULT_WARMUP_ROUNDS}; 0: measure from a cold start)`,
  })
  parseWarmupRounds(v: string): number {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error('--warmup-rounds must be a whole number, 0 or more');
    return n;
  }
  @Option({ flags: '--concurrency <list>', description: 'Comma list of client counts (default 1,2,4,8)' })
  parseConcurrency(v: string): string {
    return v;
  }
  @Option({ flags: '--requests <n>', description: 'Requests per level and round (default max(16, 4 x concurrency))' })
  parseRequests(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--max-tokens <n>', description: 'New tokens per request (default 64)' })
  parseMaxTokens(v: string): number {
    return positiveInt(v);
  }
  @Option({
    flags: '--workload <kind>',
    description:
      'distinct | shared-prefix (a common preamble, ~1,500 tokens with the bundled tokenizers) | chat (distinct prompts, answers of max-tokens/4 to 2 x max-tokens, clients pausing --think-ms on average before each request)',
  })
  parseWorkload(v: string): string {
    if (v !== 'distinct' && v !== 'shared-prefix' && v !== 'chat') throw new Error('--workload must be distinct, shared-prefix or chat');
    return v;
  }
  @Option({ flags: '--think-ms <n>', description: `Mean pause of a client before each request, ms (default 0; ${DEFAULT_THINK_MS} with --workload chat)` })
  parseThinkMs(v: string): number {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error('--think-ms must be a number of ms, 0 or more');
    return n;
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

/**
 * Where a round's prompt numbers start. Prompts no earlier level or round sent: a server's
 * prompt cache must not stand in for prefill (llama.cpp's server keeps prompt states in RAM);
 * each server gets the same ones. Warm-up rounds number theirs apart from the measured ones.
 */
export function promptOffset(levelIndex: number, round: number, warmup: boolean): number {
  return (warmup ? WARMUP_PROMPT_OFFSET : 0) + 10_000 * (levelIndex + 1) + 1000 * round;
}

/**
 * A warm-up round's prompt: the workload's, behind a preamble of its own, so that nothing a
 * warm-up round leaves in a server's KV cache or prompt cache is a prefix of a measured prompt
 * (with the shared-prefix workload, a warm prefix would turn the first measured wave, the one
 * that tells the servers apart, into a cached one for both).
 */
export function warmupPrompt(prompt: string): string {
  return `Warm-up. ${prompt}`;
}

/** One round's line: throughput, first token, errors and, for this server, its step and CPU figures. */
export function roundSummary(row: Row): string {
  const { result, steps } = row;
  const loopCpu = loopCpuPerToken(row);
  return (
    `${result.tokensPerSecond.toFixed(1)} tok/s, TTFT p50 ${result.ttftMs.p50.toFixed(0)} ms, errors ${result.errors}` +
    (result.reconnects ? `, ${result.reconnects} sent again on a new connection (the server had closed the kept-alive one)` : '') +
    (steps?.hostMs != null ? `, host ${steps.hostMs.toFixed(3)} ms/step (p50 ${steps.hostP50Ms?.toFixed(3) ?? '–'})` : '') +
    (loopCpu ? `, Node's main thread ${loopCpu} a token` : '')
  );
}

/** The compute backend the server reports (llm_model_info{backend}): cpu, cuda, ... */
async function servedBackend(url: string): Promise<string> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return /^llm_model_info\{[^}]*backend="([^"]+)"/m.exec(text)?.[1] ?? 'cpu';
}

/** The round with the median throughput (the lower middle one for an even count). */
export function medianRound(runs: readonly Row[]): Row {
  const sorted = [...runs].sort((a, b) => a.result.tokensPerSecond - b.result.tokensPerSecond);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

type StepCounters = Record<'steps' | 'stepSeconds' | 'tokens' | 'computeCount' | 'computeSeconds' | 'hostCount' | 'hostSeconds', number> & {
  /** llm_event_loop_cpu_seconds_total; null when absent. */
  readonly loopCpuSeconds: number | null;
  /** Cumulative counts of llm_batch_host_overhead_seconds by upper bound (seconds), ascending. */
  readonly hostBuckets: readonly (readonly [number, number])[];
};

/** The batching loop's step histograms from this server's /metrics (sums and counts). */
export async function scrapeSteps(url: string): Promise<StepCounters> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return parseStepCounters(text);
}

export function parseStepCounters(text: string): StepCounters {
  const read = (name: string): number | null => {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm').exec(text);
    return m ? Number(m[1]) : null;
  };
  const value = (name: string): number => read(name) ?? 0;
  return {
    steps: value('llm_batch_step_seconds_count'),
    stepSeconds: value('llm_batch_step_seconds_sum'),
    tokens: value('llm_batch_tokens_sum'),
    computeCount: value('llm_batch_compute_seconds_count'),
    computeSeconds: value('llm_batch_compute_seconds_sum'),
    hostCount: value('llm_batch_host_overhead_seconds_count'),
    hostSeconds: value('llm_batch_host_overhead_seconds_sum'),
    loopCpuSeconds: read('llm_event_loop_cpu_seconds_total'),
    hostBuckets: [...text.matchAll(/^llm_batch_host_overhead_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} ([0-9.eE+-]+)$/gm)]
      .map((m): [number, number] => [m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])])
      .sort((x, y) => x[0] - y[0]),
  };
}

/** The median of a histogram's counts between two scrapes, linear within its bucket (ms). */
function histogramMedianMs(before: StepCounters['hostBuckets'], after: StepCounters['hostBuckets']): number | null {
  const counts = after.map(([le, n]): [number, number] => [le, n - (before.find(([b]) => b === le)?.[1] ?? 0)]);
  const total = counts.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  const rank = total / 2;
  let lower = 0;
  let below = 0;
  for (const [le, n] of counts) {
    if (n >= rank) {
      // The top bucket has no upper bound: its lower bound is all that can be said.
      if (!Number.isFinite(le)) return lower * 1000;
      return (lower + ((le - lower) * (rank - below)) / Math.max(1, n - below)) * 1000;
    }
    lower = le;
    below = n;
  }
  return null;
}

export function stepDelta(a: StepCounters, b: StepCounters): StepFigures {
  const steps = b.steps - a.steps;
  const compute = b.computeCount - a.computeCount;
  const host = b.hostCount - a.hostCount;
  return {
    steps,
    tokensPerStep: steps ? (b.tokens - a.tokens) / steps : 0,
    stepMs: steps ? ((b.stepSeconds - a.stepSeconds) * 1000) / steps : 0,
    computeMs: compute ? ((b.computeSeconds - a.computeSeconds) * 1000) / compute : null,
    hostMs: host ? ((b.hostSeconds - a.hostSeconds) * 1000) / host : null,
    hostP50Ms: host ? histogramMedianMs(a.hostBuckets, b.hostBuckets) : null,
    loopCpuMs: a.loopCpuSeconds !== null && b.loopCpuSeconds !== null ? (b.loopCpuSeconds - a.loopCpuSeconds) * 1000 : null,
  };
}

/** The server's main-thread CPU over a level per token the clients received (µs), if known. */
function loopCpuPerToken(r: Row): string | null {
  const ms = r.steps?.loopCpuMs;
  return ms == null || !(r.result.tokens > 0) ? null : `${((ms * 1000) / r.result.tokens).toFixed(0)} µs`;
}

export function formatTable(rows: Row[]): string {
  const head = ['target', 'clients', 'tok/s', 'req/s', 'TTFT p50', 'TTFT p99', 'ITL p50', 'ITL p99', 'errors', 'tok/step', 'step', 'compute', 'host/step', 'host p50', 'Node CPU/tok'];
  const ms = (v: number | null | undefined, digits = 2): string => (v == null ? '–' : `${v.toFixed(digits)} ms`);
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
    r.steps ? r.steps.tokensPerStep.toFixed(1) : '–',
    ms(r.steps?.stepMs),
    ms(r.steps?.computeMs),
    ms(r.steps?.hostMs, 3),
    ms(r.steps?.hostP50Ms, 3),
    loopCpuPerToken(r) ?? '–',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  let out = `${fmt(head)}\n|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|\n${lines.map(fmt).join('\n')}\n`;
  const ours = rows.filter((r) => r.target === OURS);
  const refs = rows.filter((r) => r.target !== OURS);
  if (refs.length) {
    out += '\nRatios (this server / the best llama.cpp server setting at that level, by throughput):\n';
    for (const o of ours) {
      const best = bestReference(refs, o.concurrency);
      if (!best) continue;
      out +=
        `  ${o.concurrency} clients vs ${best.target}: throughput ${(o.result.tokensPerSecond / best.result.tokensPerSecond).toFixed(2)}x, ` +
        `TTFT p50 ${(o.result.ttftMs.p50 / best.result.ttftMs.p50).toFixed(2)}x, TTFT p99 ${(o.result.ttftMs.p99 / best.result.ttftMs.p99).toFixed(2)}x, ` +
        `ITL p50 ${(o.result.itlMs.p50 / best.result.itlMs.p50).toFixed(2)}x\n`;
      const failed = [o, best].filter((r) => erroredStreams(r) > 0).map((r) => `${r.target} ${erroredStreams(r)}`);
      // A stream that ends early is a shorter request: the servers no longer ran the same load (and
      // closed-loop clients drift apart), so such a ratio compares different work.
      if (failed.length) out += `    not the same load: streams that failed (all rounds): ${failed.join(', ')}\n`;
    }
    out += pairedRatios(ours, refs);
  }
  return out;
}

/** Requests that failed (an HTTP error, or an error event that ended the stream), every round. */
function erroredStreams(row: Row): number {
  return (row.rounds ?? [row.result]).reduce((n, r) => n + r.errors, 0);
}

/** The llama-server setting with the highest throughput (median round) at a level. */
function bestReference(refs: readonly Row[], concurrency: number): Row | undefined {
  return refs.filter((x) => x.concurrency === concurrency).sort((a, b) => b.result.tokensPerSecond - a.result.tokensPerSecond)[0];
}

/**
 * Ratios round by round (this server's round r against the same reference setting's round r,
 * run right after it), their median over the rounds: a slow or fast spell of the machine then
 * counts for both sides of a ratio. The independent medians above can pair one server's fast
 * round with the other's slow one (on a shared 2-core VM one server's rounds at one client
 * spread over 0.85-1.0x of its best).
 */
function pairedRatios(ours: readonly Row[], refs: readonly Row[]): string {
  const median = (v: number[]): number => {
    const s = [...v].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };
  let out = '';
  for (const o of ours) {
    const best = bestReference(refs, o.concurrency);
    const n = Math.min(o.rounds?.length ?? 0, best?.rounds?.length ?? 0);
    if (!best || n < 2) continue;
    const pairs = Array.from({ length: n }, (_, r) => [(o.rounds as LoadResult[])[r], (best.rounds as LoadResult[])[r]] as const);
    out +=
      `  ${o.concurrency} clients vs ${best.target}: throughput ${median(pairs.map(([a, b]) => a.tokensPerSecond / b.tokensPerSecond)).toFixed(2)}x, ` +
      `TTFT p50 ${median(pairs.map(([a, b]) => a.ttftMs.p50 / b.ttftMs.p50)).toFixed(2)}x, ` +
      `ITL p50 ${median(pairs.map(([a, b]) => a.itlMs.p50 / b.itlMs.p50)).toFixed(2)}x ` +
      `(rounds: ${pairs.map(([a, b]) => (a.tokensPerSecond / b.tokensPerSecond).toFixed(2)).join(' / ')})\n`;
  }
  return out ? `\nPaired ratios (round by round against the same setting, the median of the rounds):\n${out}` : '';
}
