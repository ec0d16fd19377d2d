import { ChildProcess, spawn } from 'node:child_process';
import { Agent, request } from 'node:http';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '@app/common';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

export interface BenchServer {
  readonly url: string;
  readonly key: string;
  /** CPU time (user + system, ms) the server process has used so far (Linux /proc). */
  cpuMs(): number | null;
  /** Resident memory of the server process now and at its peak, bytes (Linux /proc VmRSS, VmHWM). */
  memory(): { rss: number; peak: number } | null;
  stop(): Promise<void>;
}

/** utime + stime of a process in ms, from /proc/<pid>/stat (null elsewhere). */
export function processCpuMs(pid: number | undefined): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of stat (utime, stime) in clock ticks; 100 Hz on Linux.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return null;
  }
}

/** VmRSS and VmHWM of a process, from /proc/<pid>/status (null elsewhere). */
function processMemory(pid: number | undefined): { rss: number; peak: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    const rss = kb('VmRSS');
    return Number.isFinite(rss) ? { rss, peak: kb('VmHWM') } : null;
  } catch {
    return null;
  }
}

/**
 * Starts the compiled API server (dist/, as `npm start` runs it) in its own process, so that the
 * load generator here and the server do not share an event loop. Rate limits are off (the
 * benchmark is the only client) unless `env` sets them; `loadTimeoutMs` bounds the model load.
 */
export async function startBenchServer(env: Record<string, string>, loadTimeoutMs = 600_000): Promise<BenchServer> {
  const port = await freePort();
  const key = 'sk-bench-0123456789abcdef';
  const main = join(projectRoot(), 'dist', 'apps', 'api', 'src', 'main.js');
  const child: ChildProcess = spawn(process.execPath, [main], {
    cwd: projectRoot(),
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      API_KEYS: key,
      AUTH_DISABLED: 'false',
      LOG_LEVEL: 'warn',
      DATA_DIR: mkdtempSync(join(tmpdir(), 'llm-bench-')),
      RATE_LIMIT_IP_RPM: '0',
      RATE_LIMIT_IP_STREAM_RPM: '0',
      KEY_DEFAULT_RPM: '0',
      KEY_DEFAULT_TPM: '0',
      KEY_DEFAULT_CONCURRENCY: '0',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const until = Date.now() + loadTimeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with code ${child.exitCode}: ${stderr}`);
    try {
      const res = await fetch(`${url}/health`);
      if (res.ok && ((await res.json()) as { model_loaded: boolean }).model_loaded) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > until) throw new Error(`server did not load its model in ${loadTimeoutMs / 1000} s: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    key,
    cpuMs: () => processCpuMs(child.pid),
    memory: () => processMemory(child.pid),
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

export interface HttpCall {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly body?: string;
}

export interface LoadResult {
  readonly requests: number;
  readonly errors: number;
  readonly seconds: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Response headers of the last request (e.g. X-Cache), to check what was measured. */
  readonly lastHeaders: Record<string, string | string[] | undefined>;
}

/**
 * Closed-loop load: `connections` keep-alive connections, each sending the next request as soon
 * as the previous answer has been read, for `seconds`. Latency is per request, client side.
 */
export async function load(baseUrl: string, call: HttpCall, connections: number, seconds: number): Promise<LoadResult> {
  const { hostname, port } = new URL(baseUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const latencies: number[] = [];
  let errors = 0;
  let lastHeaders: LoadResult['lastHeaders'] = {};
  const headers: Record<string, string | number> = { ...call.headers };
  if (call.body !== undefined) headers['Content-Length'] = Buffer.byteLength(call.body);
  const once = (): Promise<void> =>
    new Promise((resolve) => {
      const started = process.hrtime.bigint();
      const req = request({ host: hostname, port, method: call.method, path: call.path, headers, agent }, (res) => {
        res.on('data', () => undefined);
        res.on('end', () => {
          if (res.statusCode === 200) latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
          else errors++;
          lastHeaders = res.headers;
          resolve();
        });
      });
      req.on('error', () => {
        errors++;
        resolve();
      });
      if (call.body !== undefined) req.write(call.body);
      req.end();
    });
  const started = process.hrtime.bigint();
  const deadline = Date.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (Date.now() < deadline) await once();
    }),
  );
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const pct = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
  return { requests: latencies.length, errors, seconds: elapsed, rps: latencies.length / elapsed, p50Ms: pct(50), p99Ms: pct(99), lastHeaders };
}
