import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { startTestApp } from './support/test-app';

/** STEP_TRACE_FILE: the real engine's steps reach the trace, and the summary script reads it. */
describe('step trace (STEP_TRACE_FILE)', () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'step-trace-e2e-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes one line per step: the prompt step, then one-token decode steps; the summary groups them', async () => {
    const file = join(dir, 'steps.jsonl');
    const t = await startTestApp({ STEP_TRACE_FILE: file });
    try {
      const res = await request(t.url)
        .post('/v1/completions')
        .set('Authorization', `Bearer ${t.key}`)
        .set('Cache-Control', 'no-store')
        .send({ prompt: 'Once upon a time, a frog', max_tokens: 6, temperature: 0, ignore_eos: true })
        .expect(200);
      expect(res.body.usage.completion_tokens).toBe(6);
    } finally {
      await t.close();
    }
    const steps = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number | string | null>);
    // The prompt step samples the first token; five more steps decode one token each.
    expect(steps).toHaveLength(6);
    expect(steps[0]).toMatchObject({ sequences: 1, prompts: 1, model: expect.any(String) });
    expect(steps[0].tokens as number).toBeGreaterThan(1);
    for (const step of steps.slice(1)) expect(step).toMatchObject({ tokens: 1, sequences: 1, prompts: 0 });
    for (const step of steps) expect(step.ms as number).toBeGreaterThan(0);
    const summary = execFileSync(process.execPath, ['scripts/step-trace-summary.mjs', file], { encoding: 'utf8' });
    expect(summary).toMatch(/^6 steps, \d+ tokens/);
    expect(summary).toMatch(/\n1P\+0D\s+1 /);
    expect(summary).toMatch(/\n1D\s+5 /);
  });

  it("reads llama-server's decode calls as traced by scripts/llama-decode-trace.c, which compiles", () => {
    const file = join(dir, 'llama.trace');
    // start, ms, batch tokens, rows with logits: two decode steps of 8 streams, one step of 8 prompts.
    const lines = ['100.000 20.000 8 8', '120.500 22.000 8 8', '143.000 280.000 304 8'];
    writeFileSync(file, lines.join('\n') + '\n');
    const summary = execFileSync(process.execPath, ['scripts/step-trace-summary.mjs', file], { encoding: 'utf8' });
    expect(summary).toMatch(/^3 steps, 320 tokens, 0\.32 s of compute/);
    expect(summary).toMatch(/\n8D\s+2\s+21\.00/);
    expect(summary).toMatch(/\nP, 8 logits\s+1\s+280\.00/);
    execFileSync('cc', ['-O2', '-Wall', '-Werror', '-shared', '-fPIC', '-o', join(dir, 'trace.so'), 'scripts/llama-decode-trace.c', '-ldl']);
  });
});

