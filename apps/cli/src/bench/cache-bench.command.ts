import { randomBytes } from 'node:crypto';
import { Option, SubCommand } from 'nest-commander';
import { AppConfig } from '@app/common';
import { createCacheRedis, deleteKeys, SemanticIndex } from '@app/caching';
import { BaseCommand } from '../base.command';
import { positiveInt } from '../support/options';
import { load, LoadResult, startBenchServer } from './bench.support';

interface CacheBenchOptions {
  duration: number;
  connections: number;
  rounds: number;
  sizes: number[];
  dims: number[];
  queries: number;
  redis?: boolean;
  json?: boolean;
}

interface Measured extends LoadResult {
  /** Server CPU time per request (µs): robust when other processes share the machine. */
  serverCpuUsPerRequest: number | null;
}

interface ExactResult {
  store: 'memory' | 'redis';
  /** GET /health: the trivial route (no key, no body, not logged). */
  reference: Measured;
  /** GET /v1/models: trivial too, but authenticated and logged like a generation request. */
  models: Measured;
  hit: Measured;
  /** An OpenAI chat completion answered from the cache (what the official SDKs send). */
  chatHit: Measured;
  /** Median chat-hit req/s over the median reference req/s. */
  chatRatio: number;
  /** Median hit req/s over the median reference req/s: the figure the target applies to. */
  ratio: number;
  /** The same ratio in each round (routes take turns within a round), lowest to highest. */
  roundRatios: number[];
  ratioToModels: number;
  /** reference CPU per request over hit CPU per request (the same ratio, measured in CPU time). */
  cpuRatio: number | null;
}

interface SemanticResult {
  dimension: number;
  entries: number;
  queries: number;
  meanMs: number;
  p99Ms: number;
}

/** The exact-hit throughput target, as a fraction of the trivial route's requests per second. */
const TARGET = 0.6;

/**
 * `bench cache`: (1) exact-cache hits against a trivial route of the same server in the same run
 * (GET /health: no key, no body, no model), printing req/s, p50/p99 latency and the ratio;
 * (2) semantic lookups (one scope holding every entry: the worst case) at 1k, 10k, 100k entries.
 */
@SubCommand({ name: 'cache', description: 'Exact-hit throughput vs a trivial route, and semantic lookup time at 1k/10k/100k entries' })
export class CacheBenchCommand extends BaseCommand {
  constructor(private readonly config: AppConfig) {
    super();
  }

  async run(_args: string[], options: CacheBenchOptions): Promise<void> {
    const opts: CacheBenchOptions = {
      duration: options.duration ?? 5,
      connections: options.connections ?? 16,
      rounds: options.rounds ?? 3,
      sizes: options.sizes ?? [1_000, 10_000, 100_000],
      dims: options.dims ?? [384, 1024],
      queries: options.queries ?? 200,
      redis: options.redis,
      json: options.json,
    };
    const log = (line: string): void => {
      if (!opts.json) process.stdout.write(`${line}\n`);
    };
    const exact: ExactResult[] = [];
    const stores: ('memory' | 'redis')[] = ['memory'];
    if (opts.redis) {
      if (!this.config.redisUrl) throw new Error('--redis needs REDIS_URL');
      stores.push('redis');
    }
    log(`exact cache: ${opts.connections} connections, ${opts.rounds} rounds of ${opts.duration} s per route, model ${this.config.modelPath}`);
    for (const store of stores) exact.push(await this.#exact(store, opts, log));
    log(`\nsemantic lookup (${opts.queries} queries, all entries in the queried scope):`);
    const semantic: SemanticResult[] = [];
    for (const dimension of opts.dims) {
      for (const entries of opts.sizes) {
        const r = benchSemantic(dimension, entries, entries >= 100_000 ? Math.max(20, Math.floor(opts.queries / 4)) : opts.queries);
        semantic.push(r);
        log(`  dim ${String(dimension).padStart(4)}  ${String(entries).padStart(7)} entries  mean ${r.meanMs.toFixed(3)} ms  p99 ${r.p99Ms.toFixed(3)} ms`);
      }
    }
    if (opts.json) process.stdout.write(`${JSON.stringify({ target: TARGET, exact, semantic }, null, 2)}\n`);
  }

  async #exact(store: 'memory' | 'redis', opts: CacheBenchOptions, log: (l: string) => void): Promise<ExactResult> {
    const namespace = `bench-${randomBytes(4).toString('hex')}`;
    const server = await startBenchServer({
      CACHE_ENABLED: 'true',
      SEMANTIC_CACHE_ENABLED: 'false',
      REDIS_URL: store === 'redis' ? (this.config.redisUrl ?? '') : '',
      CACHE_NAMESPACE: namespace,
    });
    try {
      const headers = { 'Content-Type': 'application/json', Authorization: `Bearer ${server.key}` };
      const hitCall = {
        method: 'POST' as const,
        path: '/v1/generate',
        headers,
        body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 64, temperature: 0 }),
      };
      const chatCall = {
        method: 'POST' as const,
        path: '/v1/chat/completions',
        headers,
        body: JSON.stringify({
          messages: [
            { role: 'system', content: 'You tell short stories.' },
            { role: 'user', content: 'Once upon a time' },
          ],
          max_tokens: 64,
          temperature: 0,
        }),
      };
      for (const call of [hitCall, chatCall]) {
        const prime = await fetch(`${server.url}${call.path}`, { method: 'POST', headers, body: call.body });
        if (!prime.ok) throw new Error(`priming ${call.path} failed: ${prime.status} ${await prime.text()}`);
      }
      const reference = { method: 'GET' as const, path: '/health' };
      const models = { method: 'GET' as const, path: '/v1/models', headers: { Authorization: `Bearer ${server.key}` } };
      const measure = async (call: typeof hitCall | typeof reference | typeof models): Promise<Measured> => {
        const before = server.cpuMs();
        const r = await load(server.url, call, opts.connections, opts.duration);
        const after = server.cpuMs();
        const cpu = before === null || after === null || r.requests === 0 ? null : ((after - before) * 1000) / r.requests;
        return { ...r, serverCpuUsPerRequest: cpu };
      };
      // Warm every path (JIT, connections) before measuring.
      for (const call of [reference, models, hitCall, chatCall]) await load(server.url, call, opts.connections, 1);
      // Rounds in turn (reference, models, hit, reference, ...): a slow spell of the machine then
      // hits every route alike instead of one of them; each route reports its median round.
      const rounds: { ref: Measured; mod: Measured; hit: Measured; chat: Measured }[] = [];
      for (let i = 0; i < opts.rounds; i++) {
        const round = { ref: await measure(reference), mod: await measure(models), hit: await measure(hitCall), chat: await measure(chatCall) };
        for (const r of [round.hit, round.chat]) {
          if (r.lastHeaders['x-cache'] !== 'HIT') throw new Error(`a measured request was not a cache hit (X-Cache: ${String(r.lastHeaders['x-cache'])})`);
        }
        rounds.push(round);
      }
      const median = (pick: (r: (typeof rounds)[number]) => Measured): Measured =>
        rounds.map(pick).sort((a, b) => a.rps - b.rps)[Math.floor(rounds.length / 2)];
      const ref = median((r) => r.ref);
      const mod = median((r) => r.mod);
      const hit = median((r) => r.hit);
      const chatHit = median((r) => r.chat);
      const chatRatio = chatHit.rps / ref.rps;
      const roundRatios = rounds.map((r) => r.hit.rps / r.ref.rps).sort((a, b) => a - b);
      const ratio = hit.rps / ref.rps;
      const cpuRatio = ref.serverCpuUsPerRequest && hit.serverCpuUsPerRequest ? ref.serverCpuUsPerRequest / hit.serverCpuUsPerRequest : null;
      const line = (name: string, r: Measured): string =>
        `  ${name.padEnd(32)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms  ` +
        `server CPU ${r.serverCpuUsPerRequest === null ? '?' : r.serverCpuUsPerRequest.toFixed(0)} µs/req  (${r.requests} requests, ${r.errors} errors)`;
      log(`${store} store:`);
      log(line('GET /health (reference)', ref));
      log(line('GET /v1/models', mod));
      log(line('POST /v1/generate (HIT)', hit));
      log(line('POST /v1/chat/completions (HIT)', chatHit));
      log('  (median round of each route)');
      const spread = roundRatios.length > 1 ? ` (rounds ${roundRatios[0].toFixed(2)}–${roundRatios[roundRatios.length - 1].toFixed(2)})` : '';
      log(`  ratio hit/reference req/s    ${ratio.toFixed(2)} (target >= ${TARGET}: ${ratio >= TARGET ? 'met' : 'NOT met'})${spread}`);
      log(`  ratio chat hit/reference     ${chatRatio.toFixed(2)}`);
      log(`  ratio hit/models req/s       ${(hit.rps / mod.rps).toFixed(2)}`);
      if (cpuRatio !== null) log(`  ratio by server CPU/request  ${cpuRatio.toFixed(2)}`);
      return { store, reference: ref, models: mod, hit, chatHit, chatRatio, ratio, roundRatios, ratioToModels: hit.rps / mod.rps, cpuRatio };
    } finally {
      await server.stop();
      if (store === 'redis' && this.config.redisUrl) await dropNamespace(this.config.redisUrl, namespace);
    }
  }

  @Option({ flags: '--duration <seconds>', description: 'Seconds of load per route (default 5)' })
  parseDuration(value: string): number {
    return positiveInt(value);
  }

  @Option({ flags: '--rounds <n>', description: 'Rounds per route, taken in turn; medians are reported (default 3)' })
  parseRounds(value: string): number {
    return positiveInt(value);
  }

  @Option({ flags: '--connections <n>', description: 'Concurrent keep-alive connections (default 16)' })
  parseConnections(value: string): number {
    return positiveInt(value);
  }

  @Option({ flags: '--sizes <list>', description: 'Semantic index sizes (default 1000,10000,100000)' })
  parseSizes(value: string): number[] {
    return value.split(',').map((v) => positiveInt(v));
  }

  @Option({ flags: '--dims <list>', description: 'Embedding dimensions (default 384,1024)' })
  parseDims(value: string): number[] {
    return value.split(',').map((v) => positiveInt(v));
  }

  @Option({ flags: '--queries <n>', description: 'Semantic lookups per size (default 200; a quarter at 100k)' })
  parseQueries(value: string): number {
    return positiveInt(value);
  }

  @Option({ flags: '--redis', description: 'Also measure the exact cache on Redis (REDIS_URL)' })
  parseRedis(): boolean {
    return true;
  }

  @Option({ flags: '--json', description: 'Machine-readable output' })
  parseJson(): boolean {
    return true;
  }
}

/** Removes what the benchmark's server stored in Redis. */
async function dropNamespace(url: string, namespace: string): Promise<void> {
  const redis = createCacheRedis(url, 5000);
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    await deleteKeys(redis, `${namespace}:*`);
  } finally {
    redis.disconnect();
  }
}

/** Random unit-ish vectors (a seeded LCG: the same run each time). */
function randomVectors(count: number, dimension: number, seed: number): Float32Array[] {
  let state = seed >>> 0;
  const next = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  };
  return Array.from({ length: count }, () => {
    const v = new Float32Array(dimension);
    for (let i = 0; i < dimension; i++) v[i] = next();
    return v;
  });
}

export function benchSemantic(dimension: number, entries: number, queries: number): SemanticResult {
  const index = new SemanticIndex<number>(dimension, entries);
  const one = new Float32Array(dimension);
  let state = 7;
  for (let i = 0; i < entries; i++) {
    for (let d = 0; d < dimension; d++) {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
      one[d] = state / 2 ** 32 - 0.5;
    }
    index.insert(`e${i}`, 'scope', one, i);
  }
  const probes = randomVectors(queries, dimension, 42);
  for (const p of probes.slice(0, 5)) index.search('scope', p); // warm-up
  const times: number[] = [];
  for (const p of probes) {
    const t0 = process.hrtime.bigint();
    index.search('scope', p);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return {
    dimension,
    entries,
    queries,
    meanMs: times.reduce((s, t) => s + t, 0) / times.length,
    p99Ms: times[Math.min(times.length - 1, Math.floor(0.99 * times.length))],
  };
}
