import { useEffect, useState } from 'preact/hooks';
import { api, UsageLine, UsageReport } from './api';
import { Legend, Series, StackedBars } from './chart';
import { n } from './format';

const RANGES = { '24h': { from: '24h', step: 'hour' }, '7d': { from: '7d', step: 'day' }, '30d': { from: '30d', step: 'day' } } as const;
type Range = keyof typeof RANGES;
type By = 'key' | 'model';
type Measure = 'total_tokens' | 'requests';
/** Series beyond this many are summed as "other". */
const MAX_SERIES = 7;

function who(line: UsageLine, by: By): string {
  return by === 'key' ? (line.key_name ?? line.key_id ?? '?') : (line.model ?? '?');
}

/** Every hour or day of the range, so that idle periods show as gaps rather than vanish. */
function periods(report: UsageReport, step: 'hour' | 'day'): string[] {
  const out: string[] = [];
  const unit = step === 'hour' ? 3_600_000 : 86_400_000;
  const from = Math.floor(Date.parse(report.from) / unit) * unit;
  for (let t = from; t < Date.parse(report.to); t += unit) out.push(new Date(t).toISOString());
  return out;
}

function label(iso: string, step: 'hour' | 'day'): string {
  return step === 'hour' ? `${iso.slice(11, 13)}h` : iso.slice(5, 10);
}

export function UsagePage() {
  const [range, setRange] = useState<Range>('7d');
  const [by, setBy] = useState<By>('key');
  const [measure, setMeasure] = useState<Measure>('total_tokens');
  const [series, setSeries] = useState<UsageReport | null>(null);
  const [totals, setTotals] = useState<UsageReport | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const { from, step } = RANGES[range];
    let stale = false;
    Promise.all([
      api<UsageReport>('GET', `/admin/usage?from=${from}&group_by=${step},${by}`),
      api<UsageReport>('GET', `/admin/usage?from=${from}&group_by=${by}`),
    ]).then(
      ([s, t]) => {
        if (stale) return;
        setSeries(s);
        setTotals(t);
        setError(null);
      },
      (err: Error) => !stale && setError(err.message),
    );
    return () => void (stale = true);
  }, [range, by]);

  const step = RANGES[range].step;
  let chart: { labels: string[]; series: Series[] } | null = null;
  if (series && totals) {
    const times = periods(series, step);
    const ranked = [...totals.data].sort((a, b) => b[measure] - a[measure]).map((l) => who(l, by));
    const named = ranked.slice(0, MAX_SERIES);
    const index = new Map(times.map((t, i) => [t, i]));
    const values = new Map<string, number[]>();
    for (const line of series.data) {
      const name = named.includes(who(line, by)) ? who(line, by) : 'other';
      const at = step === 'hour' ? line.hour : line.day && new Date(`${line.day}T00:00:00Z`).toISOString();
      const i = at === undefined ? undefined : index.get(at);
      if (i === undefined) continue;
      const row = values.get(name) ?? times.map(() => 0);
      row[i] += line[measure];
      values.set(name, row);
    }
    const order = [...named, 'other'].filter((name) => values.has(name));
    chart = { labels: times.map((t) => label(t, step)), series: order.map((name) => ({ name, values: values.get(name) ?? [] })) };
  }

  return (
    <section>
      <div class="page-head">
        <h1>Usage</h1>
        <div class="row">
          <select aria-label="Range" value={range} onChange={(e) => setRange((e.target as HTMLSelectElement).value as Range)}>
            <option value="24h">Last 24 hours</option>
            <option value="7d">Last 7 days</option>
            <option value="30d">Last 30 days</option>
          </select>
          <select aria-label="Group by" value={by} onChange={(e) => setBy((e.target as HTMLSelectElement).value as By)}>
            <option value="key">per key</option>
            <option value="model">per model</option>
          </select>
          <select aria-label="Measure" value={measure} onChange={(e) => setMeasure((e.target as HTMLSelectElement).value as Measure)}>
            <option value="total_tokens">tokens</option>
            <option value="requests">requests</option>
          </select>
        </div>
      </div>
      {error && <p class="error">{error}</p>}
      {chart && (
        <div class="card">
          <h2>
            {measure === 'total_tokens' ? 'Tokens' : 'Requests'} per {step}, per {by}
          </h2>
          {chart.series.length === 0 ? <p class="muted">No usage in this range.</p> : <StackedBars labels={chart.labels} series={chart.series} unit={measure === 'total_tokens' ? 'tokens' : 'requests'} />}
          <Legend series={chart.series} />
        </div>
      )}
      {totals && (
        <table class="table" aria-label="Usage totals">
          <thead>
            <tr>
              <th>{by === 'key' ? 'Key' : 'Model'}</th>
              <th class="num">Requests</th>
              <th class="num">Prompt</th>
              <th class="num">Cached prompt</th>
              <th class="num">Completion</th>
              <th class="num">Total tokens</th>
              <th class="num">Cache hits</th>
              <th class="num">Errors</th>
            </tr>
          </thead>
          <tbody>
            {[...totals.data, { ...totals.totals, key_name: 'Total', model: 'Total' }].map((l, i) => (
              <tr key={i} class={i === totals.data.length ? 'total' : ''}>
                <td>{who(l, by)}</td>
                <td class="num">{n(l.requests)}</td>
                <td class="num">{n(l.prompt_tokens)}</td>
                <td class="num">{n(l.cached_prompt_tokens)}</td>
                <td class="num">{n(l.completion_tokens)}</td>
                <td class="num">{n(l.total_tokens)}</td>
                <td class="num">{n(l.cache_hits)}</td>
                <td class="num">{n(l.errors)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
