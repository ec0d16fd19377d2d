import { Command, Option } from 'nest-commander';
import { UsageLine, UsageReport, UsageReportService } from '@app/usage';
import { BaseCommand } from './base.command';

interface UsageOptions {
  key?: string;
  model?: string;
  route?: string;
  since?: string;
  until?: string;
  groupBy?: string;
  json?: boolean;
}

const n = (v: number): string => v.toLocaleString('en-US');

const LABELS: Record<string, [string, (l: UsageLine) => string]> = {
  key: ['KEY', (l) => (l.key_name ? `${l.key_name} (${l.key_id})` : (l.key_id ?? ''))],
  model: ['MODEL', (l) => l.model ?? ''],
  route: ['ROUTE', (l) => l.route ?? ''],
  day: ['DAY', (l) => l.day ?? ''],
  hour: ['HOUR (UTC)', (l) => (l.hour ?? '').slice(0, 16).replace('T', ' ')],
};

/** The report as a table: the group columns, the counts, and a TOTAL line. */
export function formatUsage(report: UsageReport): string {
  const head = `Usage from ${report.from} to ${report.to} (UTC, hour precision)\n`;
  if (report.data.length === 0) return `${head}No usage recorded in this range.\n`;
  const groups = report.group_by.map((g) => LABELS[g]);
  const header = [...groups.map(([h]) => h), 'REQUESTS', 'PROMPT', 'CACHED', 'COMPLETION', 'TOTAL', 'CACHE HITS', 'ERRORS'];
  const row = (l: UsageLine, label?: string): string[] => [
    ...groups.map(([, get], i) => (label !== undefined ? (i === 0 ? label : '') : get(l))),
    n(l.requests),
    n(l.prompt_tokens),
    n(l.cached_prompt_tokens),
    n(l.completion_tokens),
    n(l.total_tokens),
    n(l.cache_hits),
    n(l.errors),
  ];
  const rows = [...report.data.map((l) => row(l)), row(report.totals, 'TOTAL')];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const numeric = (i: number): boolean => i >= groups.length;
  const render = (r: string[]): string => r.map((c, i) => (numeric(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return head + [header, ...rows].map(render).join('\n') + '\n';
}

@Command({
  name: 'usage',
  description: 'Usage from the ledger (DATA_DIR/keys.db or DATABASE_URL): requests and tokens per key, model, route, day or hour',
})
export class UsageCommand extends BaseCommand {
  constructor(private readonly reports: UsageReportService) {
    super();
  }

  async run(args: string[], o: UsageOptions): Promise<void> {
    if (args.length > 0) throw new UsageArgumentError(`unexpected argument ${JSON.stringify(args[0])}`);
    const report = await this.reports.report({ key: o.key, model: o.model, route: o.route, from: o.since ?? '7d', to: o.until, groupBy: o.groupBy });
    process.stdout.write(o.json ? `${JSON.stringify(report, null, 2)}\n` : formatUsage(report));
  }

  @Option({ flags: '--key <id-or-name>', description: 'Only this key' })
  parseKey(v: string): string {
    return v;
  }

  @Option({ flags: '--model <id>', description: 'Only this model' })
  parseModel(v: string): string {
    return v;
  }

  @Option({ flags: '--route <template>', description: 'Only this route, e.g. /v1/chat/completions' })
  parseRoute(v: string): string {
    return v;
  }

  @Option({ flags: '--since <when>', description: 'Start: duration back from now (24h, 7d, 4w) or ISO date/time (default 7d)' })
  parseSince(v: string): string {
    return v;
  }

  @Option({ flags: '--until <when>', description: 'End (exclusive), same forms (default now)' })
  parseUntil(v: string): string {
    return v;
  }

  @Option({ flags: '--group-by <fields>', description: 'Comma list of key, model, route, day, hour (default key)' })
  parseGroupBy(v: string): string {
    return v;
  }

  @Option({ flags: '--json', description: 'Machine-readable output (the same document as GET /admin/usage)' })
  parseJson(): boolean {
    return true;
  }
}

/** A usage error (exit 2), like a bad option value. */
class UsageArgumentError extends Error {
  readonly code = 'invalid_usage_query';
}
