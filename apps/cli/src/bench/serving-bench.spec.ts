import { formatTable, medianRound, parseStepCounters, promptOffset, roundSummary, Row, stepDelta, warmupPrompt } from './serving-bench.command';
import { distinctPrompt, LoadResult, SHARED_PREFIX, sharedPrefixPrompt } from './load.generator';

const result = (tps: number, ttft: number): LoadResult => ({
  requests: 8,
  errors: 0,
  reconnects: 0,
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

  it('takes the median host overhead from the histogram, interpolated in its bucket', () => {
    const buckets = (counts: number[]): string =>
      ['0.0001', '0.0002', '0.0005', '0.001', '+Inf']
        .map((le, i) => `llm_batch_host_overhead_seconds_bucket{le="${le}",model="m"} ${counts[i]}`)
        .concat([`llm_batch_host_overhead_seconds_count{model="m"} ${counts[4]}`, `llm_batch_host_overhead_seconds_sum{model="m"} 1`])
        .join('\n');
    // Between the scrapes: 10 steps under 0.1 ms, 30 in (0.1, 0.2], 10 in (0.2, 0.5], 50 over 1 ms.
    const d = stepDelta(parseStepCounters(buckets([5, 5, 5, 5, 5])), parseStepCounters(buckets([15, 45, 55, 55, 105])));
    // Rank 50 of 100 falls in (0.2, 0.5] ms, the 10th of its 10 steps: at its top.
    expect(d.hostP50Ms).toBeCloseTo(0.5);
    // Rank 25: (0.1, 0.2] holds ranks 11-40, so 15/30 of the way.
    const e = stepDelta(parseStepCounters(buckets([0, 0, 0, 0, 0])), parseStepCounters(buckets([10, 40, 40, 40, 50])));
    expect(e.hostP50Ms).toBeCloseTo(0.1 + 0.1 * (15 / 30));
  });

  it('without the engine addon there are no compute or host figures', () => {
    const empty = parseStepCounters('llm_batch_step_seconds_count 5\nllm_batch_step_seconds_sum 0.05\n');
    const later = parseStepCounters('llm_batch_step_seconds_count 15\nllm_batch_step_seconds_sum 0.15\n');
    expect(stepDelta(empty, later)).toMatchObject({ steps: 10, computeMs: null, hostMs: null, loopCpuMs: null });
  });

  it("prints the server's main-thread CPU a token the clients got, where the server exports it", () => {
    const scrape = (cpu: number): string => `llm_batch_step_seconds_count 5\nllm_event_loop_cpu_seconds_total ${cpu}\n`;
    const steps = stepDelta(parseStepCounters(scrape(1.5)), parseStepCounters(scrape(1.9)));
    expect(steps.loopCpuMs).toBeCloseTo(400);
    // 400 ms over 1,000 tokens: 400 µs a token; a reference server has no such figure.
    const rows: Row[] = [
      { target: 'this server', concurrency: 1, result: result(1000, 40), steps },
      { target: 'llama-server -t 2', concurrency: 1, result: result(1100, 30) },
    ];
    const [head, , ours, ref] = formatTable(rows).split('\n');
    expect(head).toMatch(/\| Node CPU\/tok \|$/);
    expect(ours).toMatch(/\| 400 µs +\|$/);
    expect(ref).toMatch(/\| – +\|$/);
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

  it('says when a level compares different loads: streams that failed on either side, in any round', () => {
    const failing = (errors: number): LoadResult => ({ ...result(300, 100), errors });
    const rows: Row[] = [
      { target: 'this server', concurrency: 2, result: result(150, 80), rounds: [result(150, 80), result(140, 80)] },
      { target: 'llama-server -t 2', concurrency: 2, result: result(160, 90), rounds: [failing(2), result(160, 90)] },
      { target: 'this server', concurrency: 8, result: result(280, 160) },
      { target: 'llama-server -t 2', concurrency: 8, result: result(300, 320) },
    ];
    const lines = formatTable(rows).split('\n');
    const at = (clients: number) => lines.findIndex((l) => l.startsWith(`  ${clients} clients vs`));
    expect(lines[at(2) + 1]).toBe('    not the same load: streams that failed (all rounds): llama-server -t 2 2');
    expect(lines[at(8) + 1]).not.toContain('not the same load');
  });

  it('takes the median round of each server', () => {
    const rounds: Row[] = [130, 90, 120].map((tps) => ({ target: 'this server', concurrency: 1, result: result(tps, 40) }));
    expect(medianRound(rounds).result.tokensPerSecond).toBe(120);
    expect(medianRound(rounds.slice(0, 2)).result.tokensPerSecond).toBe(90);
  });

  it('prints paired ratios: the median of round-by-round ratios against the same setting', () => {
    // Rounds in time order; the machine was slow in round 2 for both servers.
    const oursRounds = [result(200, 40), result(150, 60), result(210, 50)];
    const refRounds = [result(190, 50), result(140, 50), result(230, 40)];
    const rows: Row[] = [
      { target: 'this server', concurrency: 1, result: oursRounds[0], rounds: oursRounds },
      { target: 'llama-server -t 2', concurrency: 1, result: refRounds[0], rounds: refRounds },
      { target: 'llama-server -t 1', concurrency: 1, result: result(100, 80), rounds: [result(100, 80), result(90, 80), result(95, 80)] },
    ];
    const out = formatTable(rows);
    // Throughput ratios 1.053, 1.071, 0.913: median 1.05. TTFT ratios 0.8, 1.2, 1.25: median 1.2.
    expect(out).toContain('Paired ratios');
    expect(out).toContain('1 clients vs llama-server -t 2: throughput 1.05x, TTFT p50 1.20x, ITL p50 1.00x (rounds: 1.05 / 1.07 / 0.91)');
  });

  it('prints no paired ratios for a single round', () => {
    const rows: Row[] = [
      { target: 'this server', concurrency: 1, result: result(130, 40), rounds: [result(130, 40)] },
      { target: 'llama-server -t 2', concurrency: 1, result: result(160, 30), rounds: [result(160, 30)] },
    ];
    expect(formatTable(rows)).not.toContain('Paired ratios');
  });
});

describe('bench serve rounds', () => {
  it('numbers every round’s prompts apart, warm-up rounds apart from the measured ones', () => {
    const starts: number[] = [];
    for (const warmup of [true, false]) {
      for (let level = 0; level < 6; level++) for (let round = 0; round < 9; round++) starts.push(promptOffset(level, round, warmup));
    }
    // Up to 1,000 requests a round: no two rounds share a prompt number.
    const sorted = [...starts].sort((a, b) => a - b);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i] - sorted[i - 1]).toBeGreaterThanOrEqual(1000);
    expect(promptOffset(0, 0, false)).toBe(10_000);
  });

  it('starts warm-up prompts apart from every measured one, so that no cached prefix is left for the measured rounds', () => {
    for (const measured of [distinctPrompt, sharedPrefixPrompt]) {
      const warm = warmupPrompt(measured(promptOffset(0, 0, true)));
      expect(warm).toContain(measured(promptOffset(0, 0, true)));
      // Not even the first word in common with a measured prompt of the same workload.
      expect(warm.split(' ')[0]).not.toBe(measured(promptOffset(0, 0, false)).split(' ')[0]);
    }
  });

  it('gives every shared-prefix round a prefix of its own, shared by all the round’s requests', () => {
    const [first, second] = [promptOffset(0, 0, false), promptOffset(0, 1, false)];
    const common = (a: string, b: string): number => {
      let n = 0;
      while (n < a.length && a[n] === b[n]) n++;
      return n;
    };
    // Within a round: the whole preamble in common (only the question differs).
    expect(common(sharedPrefixPrompt(first, first), sharedPrefixPrompt(first + 7, first))).toBeGreaterThan(SHARED_PREFIX.length);
    // Between rounds (and levels): not even the first two words (`Set <n>.`), so no round finds the one before's prefix cached.
    expect(sharedPrefixPrompt(second, second).split(' ').slice(0, 2)).not.toEqual(sharedPrefixPrompt(first, first).split(' ').slice(0, 2));
    expect(sharedPrefixPrompt(promptOffset(1, 0, false), promptOffset(1, 0, false)).split(' ').slice(0, 2)).not.toEqual(sharedPrefixPrompt(first, first).split(' ').slice(0, 2));
  });

  it('prints a round’s figures on one line, with the step and CPU figures this server has', () => {
    const steps = stepDelta(
      parseStepCounters('llm_batch_step_seconds_count 0\nllm_event_loop_cpu_seconds_total 0'),
      parseStepCounters('llm_batch_step_seconds_count 10\nllm_batch_compute_seconds_sum 0.03\nllm_batch_compute_seconds_count 10\nllm_batch_host_overhead_seconds_sum 0.002\nllm_batch_host_overhead_seconds_count 10\nllm_event_loop_cpu_seconds_total 0.015'),
    );
    const ours: Row = { target: 'this server', concurrency: 1, result: { ...result(150, 40), tokens: 100 }, steps };
    expect(roundSummary(ours)).toBe("150.0 tok/s, TTFT p50 40 ms, errors 0, host 0.200 ms/step (p50 –), Node's main thread 150 µs a token");
    expect(roundSummary({ target: 'llama-server -t 2', concurrency: 1, result: { ...result(160, 38), reconnects: 2 } })).toBe(
      '160.0 tok/s, TTFT p50 38 ms, errors 0, 2 sent again on a new connection (the server had closed the kept-alive one)',
    );
  });
});
