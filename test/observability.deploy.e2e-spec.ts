import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { metric, scrape, Scrape, waitFor } from './support/metrics';
import { freePort, ROOT } from './support/server-process';
import { startTestApp, TestApp } from './support/test-app';

const DEPLOY = join(ROOT, 'deploy');
const RULES = join(DEPLOY, 'prometheus', 'alerts.yml');
const DASHBOARD = join(DEPLOY, 'grafana', 'dashboards', 'llm-serving.json');

function onPath(binary: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${binary}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Prometheus (Debian's `prometheus` package, installed by .ci/run) provides both binaries. */
const HAS_PROMTOOL = onPath('promtool');
const HAS_PROMETHEUS = onPath('prometheus');
if (!HAS_PROMTOOL || !HAS_PROMETHEUS) {
  process.stderr.write('promtool/prometheus not installed (apt-get install prometheus): skipping the tests that run them\n');
}

const FUNCTIONS_AND_KEYWORDS = new Set([
  'sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'count_values', 'group',
  'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset',
  'rate', 'irate', 'increase', 'delta', 'idelta', 'deriv', 'histogram_quantile', 'abs', 'absent', 'clamp_min', 'clamp_max',
  'avg_over_time', 'max_over_time', 'min_over_time', 'sum_over_time', 'vector', 'scalar', 'time', 'label_replace', 'inf', 'nan',
]);
/** Series Prometheus makes itself for every target, not exported by the app. */
const SYNTHETIC = new Set(['up']);

/** The metric names an expression reads, and the label names its matchers use. */
export function seriesIn(expr: string): { names: string[]; labels: Map<string, string[]> } {
  const labels = new Map<string, string[]>();
  let rest = expr.replace(/\$__\w+/g, '1m');
  // name{matchers}: remember the label names, then drop the matchers and string literals
  rest = rest.replace(/([a-zA-Z_:][\w:]*)?\{([^}]*)\}/g, (_m, name: string | undefined, body: string) => {
    const names = [...body.matchAll(/([a-zA-Z_]\w*)\s*(=~|!~|!=|=)/g)].map((m) => m[1]);
    if (name) labels.set(name, [...(labels.get(name) ?? []), ...names]);
    return name ?? '';
  });
  rest = rest.replace(/"(?:[^"\\]|\\.)*"/g, '').replace(/\[[^\]]*\]/g, '');
  rest = rest.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  const names = [...rest.matchAll(/[a-zA-Z_:][\w:]*(?=\s*(\(|$|[^\w:(]))/g)]
    .filter((m) => m[1] !== '(')
    .map((m) => m[0])
    .filter((n) => !FUNCTIONS_AND_KEYWORDS.has(n) && !/^\d/.test(n) && !/^[eE]\d/.test(n));
  return { names: [...new Set(names)], labels };
}

function alertExpressions(): string[] {
  const exprs = readFileSync(RULES, 'utf8')
    .split('\n')
    .filter((l) => /^\s+expr:/.test(l))
    .map((l) => l.replace(/^\s+expr:\s*/, '').trim());
  expect(exprs.every((e) => e.length > 0 && !['|', '>'].includes(e[0]))).toBe(true); // one-line expressions only
  return exprs;
}

function dashboardExpressions(): string[] {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: { targets?: { expr: string }[] }[] };
  return dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
}

/** Strips the histogram suffixes that a scrape shows for a histogram's base name. */
function exported(s: Scrape, name: string): { declared: boolean; sampled: boolean } {
  const base = name.replace(/_(bucket|sum|count)$/, '');
  return { declared: s.declared.has(name) || s.declared.has(base), sampled: s.samples.some((x) => x.name === name) };
}

describe('PromQL extraction', () => {
  it('finds metric names and label names, not functions, keywords, ranges or strings', () => {
    const r = seriesIn('histogram_quantile(0.99, sum by (le) (rate(llm_x_bucket{endpoint=~"/v1/.*",status="5.."}[$__rate_interval]))) / on (instance) llm_y > 0.5');
    expect(r.names.sort()).toEqual(['llm_x_bucket', 'llm_y']);
    expect(r.labels.get('llm_x_bucket')).toEqual(['endpoint', 'status']);
    expect(seriesIn('up{job="llm-api"} == 0').names).toEqual(['up']);
  });
});

describe('dashboard and alert rules against the running app', () => {
  let t: TestApp;
  let redisDb: string;
  beforeAll(async () => {
    // Dependencies configured so that llm_dependency_up has its series (PING / SELECT 1 only).
    redisDb = 'redis://127.0.0.1:6379/15';
    t = await startTestApp({ REDIS_URL: redisDb, DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test' });
    // Some traffic, so that labelled request series exist.
    await fetch(`${t.url}/v1/generate`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${t.key}` },
      body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 4 }),
    });
  });
  afterAll(() => t.close());

  it('every series that a dashboard panel or an alert reads is exported, with the labels it filters on', async () => {
    const s = await scrape(t.url);
    const gpu = metric(s, 'gpu_available') > 0;
    const exprs = [...alertExpressions(), ...dashboardExpressions()];
    expect(exprs.length).toBeGreaterThan(30);
    const problems: string[] = [];
    for (const expr of exprs) {
      const { names, labels } = seriesIn(expr);
      expect(names.length).toBeGreaterThan(0);
      for (const name of names) {
        if (SYNTHETIC.has(name)) continue;
        const e = exported(s, name);
        // Without a GPU the gpu_* series are declared but have no samples (gpu_available says why).
        const needsSample = !(name.startsWith('gpu_') && name !== 'gpu_available' && !gpu);
        if (!e.declared || (needsSample && !e.sampled)) problems.push(`${name} (in ${expr})`);
        for (const label of labels.get(name) ?? []) {
          const sample = s.samples.find((x) => x.name === name);
          if (sample && !(label in sample.labels)) problems.push(`${name} has no label ${label} (in ${expr})`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  (HAS_PROMTOOL ? it : it.skip)('promtool: config and rules are valid and the alert unit tests pass', () => {
    const run = (...args: string[]): string => execFileSync('promtool', args, { cwd: DEPLOY, encoding: 'utf8' });
    expect(run('check', 'config', 'prometheus/prometheus.yml')).toContain('SUCCESS');
    expect(run('check', 'rules', 'prometheus/alerts.yml')).toContain('SUCCESS: 8 rules found');
    expect(run('test', 'rules', 'prometheus/alerts.test.yml')).toContain('SUCCESS');
  });

  describe('a real Prometheus scraping the app', () => {
    let prometheus: ChildProcess | undefined;
    let dir = '';
    let promUrl = '';
    afterAll(async () => {
      if (prometheus && prometheus.exitCode === null) {
        const exited = new Promise((r) => prometheus?.once('exit', r));
        prometheus.kill('SIGTERM');
        await exited;
      }
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    (HAS_PROMETHEUS ? it : it.skip)('reads the app\'s series back through its HTTP API and loads the alert rules', async () => {
      dir = mkdtempSync(join(tmpdir(), 'llm-prom-'));
      const port = await freePort();
      promUrl = `http://127.0.0.1:${port}`;
      const target = t.url.replace('http://', '');
      // The shipped config with the test app as target and a 1 s scrape interval.
      const config = readFileSync(join(DEPLOY, 'prometheus', 'prometheus.yml'), 'utf8')
        .replace(/scrape_interval: 15s/, 'scrape_interval: 1s')
        .replace(/evaluation_interval: 15s/, 'evaluation_interval: 1s')
        .replace("alerts.yml", join(DEPLOY, 'prometheus', 'alerts.yml'))
        .replace("['llm-api:8000']", `['${target}']`);
      writeFileSync(join(dir, 'prometheus.yml'), config);
      let output = '';
      prometheus = spawn('prometheus', [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--storage.tsdb.retention.time=1h',
      ], { stdio: ['ignore', 'pipe', 'pipe'] });
      prometheus.stderr?.on('data', (d: Buffer) => (output += d.toString()));
      const query = async (q: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> => {
        const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
        const body = (await res.json()) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
        return body.status === 'success' ? body.data.result : [];
      };
      await waitFor(async () => {
        if (prometheus?.exitCode !== null) throw new Error(`prometheus exited: ${output}`);
        try {
          return (await query('llm_slots_total')).length > 0;
        } catch {
          return false;
        }
      }, 30_000, 'a scraped series in Prometheus');
      const [slots] = await query('llm_slots_total');
      expect(slots.metric).toMatchObject({ job: 'llm-api', instance: target });
      expect(Number(slots.value[1])).toBe(2);
      const [ready] = await query('llm_model_ready');
      expect(Number(ready.value[1])).toBe(1);
      const [up] = await query('up{job="llm-api"}');
      expect(Number(up.value[1])).toBe(1);
      const rules = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as { data: { groups: { rules: { name: string; health: string }[] }[] } };
      const loaded = rules.data.groups.flatMap((g) => g.rules);
      expect(loaded.map((r) => r.name)).toContain('LLMTimeToFirstTokenHigh');
      expect(loaded.every((r) => r.health !== 'err')).toBe(true);
    });
  });
});
