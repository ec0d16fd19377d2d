import { Command, Option, SubCommand } from 'nest-commander';
import type { CacheLayer, CacheStats } from '@app/caching';
import { BaseCommand, ServerCommand } from '../base.command';
import { CacheAdminClient, FlushReport, ServerTarget, StatsReport } from './cache-admin.client';

interface CommonOptions extends ServerTarget {
  json?: boolean;
}


@SubCommand({ name: 'stats', description: "Print the response caches' counters and sizes (asks the server; Redis directly when it is down)" })
export class CacheStatsCommand extends ServerCommand {
  constructor(private readonly client: CacheAdminClient) {
    super();
  }

  async run(_args: string[], options: CommonOptions): Promise<void> {
    const report = await this.client.stats(options);
    process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : formatStats(report));
  }
}

@SubCommand({ name: 'flush', description: 'Empty the response caches (both layers unless --exact or --semantic)' })
export class CacheFlushCommand extends ServerCommand {
  constructor(private readonly client: CacheAdminClient) {
    super();
  }

  async run(_args: string[], options: CommonOptions & { exact?: boolean; semantic?: boolean }): Promise<void> {
    const layers: CacheLayer[] =
      options.exact && !options.semantic ? ['exact'] : options.semantic && !options.exact ? ['semantic'] : ['exact', 'semantic'];
    const report = await this.client.flush(options, layers);
    process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : formatFlush(report, layers));
  }

  @Option({ flags: '--exact', description: 'Only the exact cache' })
  parseExact(): boolean {
    return true;
  }

  @Option({ flags: '--semantic', description: 'Only the semantic cache' })
  parseSemantic(): boolean {
    return true;
  }
}

@Command({ name: 'cache', description: 'Response cache commands', subCommands: [CacheStatsCommand, CacheFlushCommand] })
export class CacheCommand extends BaseCommand {
  async run(): Promise<void> {
    this.command.help();
  }
}

function ratio(hits: number, misses: number): string {
  return hits + misses === 0 ? '-' : `${((100 * hits) / (hits + misses)).toFixed(1)}%`;
}

export function formatStats(report: StatsReport): string {
  if (report.source === 'redis') {
    return (
      `${report.reason}; read Redis directly (counters live in each server):\n` +
      `exact     entries ${report.exact.entries}\n` +
      `semantic  log entries ${report.semantic.entries}\n`
    );
  }
  const s: CacheStats = report.stats;
  const e = s.exact;
  const m = s.semantic;
  const mean = m.similarity.count ? (m.similarity.sum / m.similarity.count).toFixed(4) : '-';
  const rows: [string, string][] = [
    ['server', report.url],
    ['store', s.store],
    ['exact', e.enabled ? 'on' : 'off'],
    ['  entries', `${e.entries ?? '?'}${e.maxEntries ? ` / ${e.maxEntries}` : ''}${e.evictions !== null ? ` (${e.evictions} evicted)` : ''}`],
    ['  hits / misses', `${e.hits} / ${e.misses} (hit ratio ${ratio(e.hits, e.misses)})`],
    ['  writes / errors', `${e.writes} / ${e.errors}`],
    ['  ttl', `${e.ttlSeconds} s`],
    ['semantic', m.enabled ? `on (threshold ${m.threshold})` : 'off'],
    ['  entries', `${m.entries} / ${m.maxEntries} (${m.evictions} evicted)`],
    ['  hits / misses', `${m.hits} / ${m.misses} (hit ratio ${ratio(m.hits, m.misses)})`],
    ['  writes / errors', `${m.writes} / ${m.errors}`],
    ['  mean similarity', `${mean} over ${m.similarity.count} lookups`],
    ['not cacheable', `${s.bypassed} requests (sampled, or Cache-Control: no-cache)`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n';
}

function formatFlush(report: FlushReport, layers: CacheLayer[]): string {
  const via = report.source === 'server' ? `server ${report.url}` : `Redis directly (${report.reason})`;
  const parts = layers.map((l) => `${l}: ${report.flushed[l] ?? 0} entries`);
  return `Flushed via ${via}: ${parts.join(', ')}\n`;
}
