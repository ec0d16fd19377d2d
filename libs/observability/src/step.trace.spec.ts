import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StepTrace } from './step.trace';

describe('StepTrace (STEP_TRACE_FILE)', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'step-trace-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('appends one JSON line per step, in order, flushed by close()', async () => {
    const file = join(dir, 'steps.jsonl');
    const trace = new StepTrace(file);
    const before = Date.now();
    trace.write('m', { tokens: 8, sequences: 8, prompts: 0, ms: 21.1234567, computeMs: 20.5, hostMs: 0.25, threads: 2, filledTokens: 0 });
    trace.write('m', { tokens: 45, sequences: 8, prompts: 1, ms: 70, computeMs: 69.5, threads: 2, filledTokens: 1 });
    await trace.close();
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ model: 'm', ms: 21.123, computeMs: 20.5, hostMs: 0.25, threads: 2, tokens: 8, sequences: 8, prompts: 0, filled: 0 });
    expect(lines[1]).toMatchObject({ tokens: 45, prompts: 1, hostMs: null, filled: 1 });
    expect(lines[0].t as number).toBeGreaterThanOrEqual(before);
    expect(lines[1].t as number).toBeGreaterThanOrEqual(lines[0].t as number);
  });

  it('appends to a trace that exists', async () => {
    const file = join(dir, 'steps.jsonl');
    for (let i = 0; i < 2; i++) {
      const trace = new StepTrace(file);
      trace.write('m', { tokens: 1, ms: 5 });
      await trace.close();
    }
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(2);
  });

  it('stops tracing, without throwing, when the file cannot be written', async () => {
    const trace = new StepTrace(join(dir, 'no-such-folder', 'steps.jsonl'));
    trace.write('m', { tokens: 1, ms: 5 });
    await new Promise((r) => setTimeout(r, 50));
    expect(() => trace.write('m', { tokens: 1, ms: 5 })).not.toThrow();
    await trace.close();
  });
});
