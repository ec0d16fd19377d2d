import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '@app/common';
import { freePort, processCpuMs, startBenchServer } from './bench.support';

export interface RunningServer {
  readonly url: string;
  readonly label: string;
  /** The server process's CPU time so far (ms), where the OS tells it (null elsewhere). */
  cpuMs(): number | null;
  stop(): Promise<void>;
}

/** Options of {@link waitQuiet}. */
export interface QuietOptions {
  /** Length of one look at the process's CPU time, ms. Default 100. */
  readonly windowMs?: number;
  /** CPU time within one window below which the process counts as quiet, ms. Default 10 (one clock tick of /proc at 100 Hz). */
  readonly quietMs?: number;
  /** Longest wait, ms. Default 3000. */
  readonly maxMs?: number;
  /** Wait used where the CPU time cannot be read, ms. Default 500. */
  readonly fallbackMs?: number;
  /** For tests. Default: a timer. */
  readonly sleep?: (ms: number) => Promise<void>;
}

/**
 * Waits until a server process has stopped using the CPU (a window with less than `quietMs` of
 * CPU time), at most `maxMs`, and returns how long it waited. The bench takes servers in turn on
 * the same cores: llama-server's ggml threads keep spinning for work for about 150-200 ms after its
 * last request (measured: 110 and 60 ms of CPU in the first two 100 ms after a burst), and the next
 * server's first request ran against them (this server's first request of a round 120-260 ms to
 * first token against 55-70 for the next ones, and the round's TTFT p99 with it).
 */
export async function waitQuiet(cpuMs: () => number | null, o: QuietOptions = {}): Promise<number> {
  const windowMs = o.windowMs ?? 100;
  const quietMs = o.quietMs ?? 10;
  const maxMs = o.maxMs ?? 3000;
  const sleep = o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  let before = cpuMs();
  if (before === null) {
    await sleep(o.fallbackMs ?? 500);
    return o.fallbackMs ?? 500;
  }
  let waited = 0;
  while (waited < maxMs) {
    await sleep(windowMs);
    waited += windowMs;
    const now = cpuMs();
    if (now === null || now - before < quietMs) break;
    before = now;
  }
  return waited;
}

async function waitHealthy(url: string, child: ChildProcess, log: () => string, isReady: (body: unknown) => boolean, ms = 300_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}: ${log().slice(-2000)}`);
    try {
      const res = await fetch(`${url}/health`);
      if (res.ok && isReady(await res.json().catch(() => ({})))) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`server not ready after ${ms} ms: ${log().slice(-2000)}`);
}

function stopper(child: ChildProcess): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
    });
}

export interface EngineSettings {
  readonly model: string;
  readonly slots: number;
  /** This server's THREADS; undefined = its default (what a user gets without tuning). */
  readonly threads?: number;
  readonly contextPerSlot: number;
  readonly batchSize: number;
}

/** Our server, the compiled entry point, in its own process, with the engine settings given. */
export async function startOurs(s: EngineSettings, env: Record<string, string> = {}): Promise<RunningServer & { apiKey: string }> {
  const server = await startBenchServer({
    MODEL_PATH: s.model,
    PARALLEL_SLOTS: String(s.slots),
    ...(s.threads === undefined ? {} : { THREADS: String(s.threads) }),
    CONTEXT_SIZE: String(s.contextPerSlot),
    BATCH_SIZE: String(s.batchSize),
    QUEUE_MAX: '10000',
    QUEUE_TIMEOUT_MS: '3600000',
    GPU: process.env.GPU ?? 'auto',
    ...env,
  });
  return { url: server.url, label: 'this server', apiKey: server.key, cpuMs: server.cpuMs, stop: () => server.stop() };
}

/**
 * Path of llama.cpp's server built from node-llama-cpp's bundled source (built and cached on
 * first use); with `cuda`, a build with ggml's CUDA backend (for a GPU comparison).
 */
export function llamaServerBinary(explicit?: string, cuda = false): string {
  if (explicit) {
    if (!existsSync(explicit)) throw new Error(`llama-server not found at ${explicit}`);
    return explicit;
  }
  const script = join(projectRoot(), 'scripts', 'build-llama-server.sh');
  process.stderr.write('Locating llama-server (builds it from node-llama-cpp\'s llama.cpp source on first use, ~10 min on 2 cores)...\n');
  const env = { ...process.env, ...(cuda ? { LLAMA_SERVER_CUDA: '1' } : {}) };
  return execFileSync('bash', [script], { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop() as string;
}

/** Thread counts llama.cpp's server is measured at by default: cores - 1 and cores (1,2 on 2 cores). */
export function defaultReferenceThreads(cores = availableParallelism()): number[] {
  return [...new Set([Math.max(1, cores - 1), cores])];
}

/**
 * llama.cpp's own HTTP server with the same model, slots, context and batch, at `threads`;
 * `gpu` offloads every layer (as this server does on a GPU backend).
 */
export async function startLlamaServer(binary: string, s: EngineSettings, threads: number, gpu = false): Promise<RunningServer> {
  const port = await freePort();
  const child = spawn(
    binary,
    [
      '-m', s.model,
      '--host', '127.0.0.1',
      '--port', String(port),
      '-np', String(s.slots),
      '-c', String(s.contextPerSlot * s.slots),
      '-t', String(threads),
      '-tb', String(threads),
      '-b', String(s.batchSize),
      '-ub', String(s.batchSize),
      '-ngl', gpu ? '999' : '0',
      '--no-webui',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  child.stderr?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(url, child, () => out, () => true);
  return { url, label: `llama-server -t ${threads}`, cpuMs: () => processCpuMs(child.pid), stop: stopper(child) };
}
