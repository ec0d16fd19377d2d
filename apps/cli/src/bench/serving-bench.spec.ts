import { formatTable, parseStepCounters, Row, stepDelta } from './serving-bench.command';
import { LoadResult } from './load.generator';

const result = (tps: number, ttft: number): LoadResult => ({
  requests: 8,
  errors: 0,
  errorSamples: [],
  wallSeconds: 1,
  tokens: tps,
  tokensPerSecond: tps,
  requestsPerSecond: 1,
  ttftMs: { p50: ttft, p90: ttft, p99: ttft * 2, mean: ttft },
  itlMs: { p50: 5, p90: 6, p99: 7, mean: 5 },
});

describe('bench serve figures', () => {
  it('reads the step histograms from /metrics text and turns two scrapes into per-step means', () => {
    const scrape = (steps: number, compute: number, host: number, hostCount: number): string =>
      [
        '# TYPE llm_batch_step_seconds histogram',
        `llm_batch_step_seconds_bucket{le="0.001"} 1`,
        `llm_batch_step_seconds_sum ${steps * 0.004}`,
        `llm_batch_step_seconds_count ${steps}`,
        `llm_batch_tokens_sum ${steps * 8}`,
        `llm_batch_tokens_count ${steps}`,
        `llm_batch_compute_seconds_sum ${compute}`,
        `llm_batch_compute_seconds_count ${steps}`,
        `llm_batch_host_overhead_seconds_sum ${host}`,
        `llm_batch_host_overhead_seconds_count ${hostCount}`,
      ].join('\n');
    const d = stepDelta(parseStepCounters(scrape(10, 0.03, 0.001, 9)), parseStepCounters(scrape(110, 0.33, 0.021, 108)));
    expect(d.steps).toBe(100);
    expect(d.tokensPerStep).toBeCloseTo(8);
    expect(d.stepMs).toBeCloseTo(4);
    expect(d.computeMs).toBeCloseTo(3);
    expect(d.hostMs).toBeCloseTo(20 / 99);
  });

  it('without the engine addon there are no compute or host figures', () => {
    const empty = parseStepCounters('llm_batch_step_seconds_count 5\nllm_batch_step_seconds_sum 0.05\n');
    const later = parseStepCounters('llm_batch_step_seconds_count 15\nllm_batch_step_seconds_sum 0.15\n');
    expect(stepDelta(empty, later)).toMatchObject({ steps: 10, computeMs: null, hostMs: null });
  });

  it('compares each level against the best llama-server thread setting at that level', () => {
    const rows: Row[] = [
      { target: 'this server', concurrency: 1, result: result(130, 40) },
      { target: 'this server', concurrency: 8, result: result(340, 200) },
      { target: 'llama-server -t 1', concurrency: 1, result: result(120, 50) },
      { target: 'llama-server -t 1', concurrency: 8, result: result(150, 300) },
      { target: 'llama-server -t 2', concurrency: 1, result: result(160, 30) },
      { target: 'llama-server -t 2', concurrency: 8, result: result(320, 100) },
    ];
    const out = formatTable(rows);
    expect(out).toContain('1 clients vs llama-server -t 2: throughput 0.81x, TTFT p50 1.33x');
    expect(out).toContain('8 clients vs llama-server -t 2: throughput 1.06x, TTFT p50 2.00x');
  });
});
