import { Command, Option } from 'nest-commander';
import { AppConfig } from '@app/common';
import { BaseCommand, ExitCode, OptionValueError } from './base.command';

/** The server's probes, by the name the command takes. */
export const PROBES = { live: '/health/live', ready: '/health/ready', startup: '/health/startup' } as const;
export type ProbeName = keyof typeof PROBES;

export interface ProbeResult {
  readonly probe: ProbeName;
  readonly path: string;
  readonly ok: boolean;
  /** HTTP status; null when the server could not be reached. */
  readonly status: number | null;
  readonly latency_ms: number;
  /** The probe's Terminus body on 200, the error message otherwise. */
  readonly info?: unknown;
  readonly error?: string;
}

export interface HealthReport {
  readonly url: string;
  readonly ok: boolean;
  readonly probes: readonly ProbeResult[];
}

interface HealthOptions {
  url?: string;
  key?: string;
  probe?: ProbeName[];
  json?: boolean;
  timeout?: number;
  wait?: number;
}

/**
 * `health`: asks a running server's probes (default all three) and exits 0 when every one
 * answers 200, 1 otherwise (unreachable included), 2 on a usage error. `--wait` polls until they
 * pass, for deploy scripts (`npm run cli -- health --probe ready --wait 60 && ...`).
 */
@Command({ name: 'health', description: "Check a running server's probes (live, ready, startup); exit 0 when all pass, 1 otherwise" })
export class HealthCommand extends BaseCommand {
  constructor(private readonly config: AppConfig) {
    super();
  }

  async run(_args: string[], options: HealthOptions): Promise<void> {
    const url = (options.url ?? this.config.localUrl()).replace(/\/+$/, '');
    const probes = options.probe ?? (Object.keys(PROBES) as ProbeName[]);
    const timeoutMs = options.timeout ?? 3000;
    const until = Date.now() + (options.wait ?? 0) * 1000;
    let report: HealthReport;
    for (;;) {
      const results = await Promise.all(probes.map((p) => this.#probe(url, p, timeoutMs, this.#key(options))));
      report = { url, ok: results.every((r) => r.ok), probes: results };
      if (report.ok || Date.now() >= until) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : formatHealth(report));
    process.exitCode = report.ok ? ExitCode.Ok : ExitCode.Error;
  }

  async #probe(url: string, probe: ProbeName, timeoutMs: number, key: string | undefined): Promise<ProbeResult> {
    const path = PROBES[probe];
    const started = performance.now();
    const latency = (): number => Math.round((performance.now() - started) * 10) / 10;
    try {
      const res = await fetch(`${url}${path}`, {
        headers: key ? { Authorization: `Bearer ${key}` } : {},
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        /* not JSON: keep the text */
      }
      if (res.ok) return { probe, path, ok: true, status: res.status, latency_ms: latency(), info: (body as { info?: unknown }).info ?? body };
      const message = (body as { error?: { message?: string } }).error?.message ?? (text.trim().slice(0, 200) || `HTTP ${res.status}`);
      return { probe, path, ok: false, status: res.status, latency_ms: latency(), error: message };
    } catch (err) {
      const c = (err as { cause?: { code?: string; message?: string; errors?: { code?: string }[] } }).cause;
      const cause = c?.code ?? c?.errors?.[0]?.code ?? c?.message;
      const reason = (err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : `unreachable (${cause ?? (err as Error).message})`;
      return { probe, path, ok: false, status: null, latency_ms: latency(), error: reason };
    }
  }

  #key(options: HealthOptions): string | undefined {
    // Probes are public by default; with HEALTH_PUBLIC=false any valid key opens them.
    return options.key ?? (process.env.API_KEY?.trim() || this.config.apiKeys[0]);
  }

  @Option({ flags: '--url <url>', description: 'Server base URL (default from HOST and PORT, e.g. http://127.0.0.1:8000)' })
  parseUrl(value: string): string {
    if (!/^https?:\/\/[^\s]+$/.test(value)) throw new OptionValueError('expected an http(s) URL');
    return value;
  }

  @Option({ flags: '--probe <names>', description: 'Comma list of live, ready, startup (default all three)' })
  parseProbe(value: string): ProbeName[] {
    const names = value.split(',').map((s) => s.trim()).filter(Boolean);
    const bad = names.filter((n) => !(n in PROBES));
    if (names.length === 0 || bad.length) throw new OptionValueError(`unknown probe ${bad.join(', ') || '(none)'}; expected live, ready or startup`);
    return [...new Set(names)] as ProbeName[];
  }

  @Option({ flags: '--timeout <ms>', description: 'Longest wait for each probe to answer (default 3000)' })
  parseTimeout(value: string): number {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < 1 || n > 600_000) throw new OptionValueError('expected milliseconds between 1 and 600000');
    return n;
  }

  @Option({ flags: '--wait <seconds>', description: 'Poll every second until the probes pass, for at most this long (default 0: ask once)' })
  parseWait(value: string): number {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n > 86_400) throw new OptionValueError('expected whole seconds between 0 and 86400');
    return n;
  }

  @Option({ flags: '--key <key>', description: 'API key, only needed with HEALTH_PUBLIC=false (default $API_KEY, else API_KEYS[0])' })
  parseKey(value: string): string {
    return value;
  }

  @Option({ flags: '--json', description: 'Machine-readable output' })
  parseJson(): boolean {
    return true;
  }
}

export function formatHealth(report: HealthReport): string {
  const lines = [`${report.url}: ${report.ok ? 'healthy' : 'NOT healthy'}`];
  for (const p of report.probes) {
    const status = p.status === null ? '---' : String(p.status);
    lines.push(`  ${p.probe.padEnd(8)} ${(p.ok ? 'ok' : 'FAIL').padEnd(5)} ${status}  ${`${p.latency_ms} ms`.padStart(9)}${p.error ? `  ${p.error}` : ''}`);
  }
  return lines.join('\n') + '\n';
}
