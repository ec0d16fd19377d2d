import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './support/server-process';

interface Report {
  readonly position: number;
  readonly count: number;
  readonly sampled: number;
  readonly final: boolean;
  readonly computeMs: number;
  readonly doneAt: number;
}
interface GapScenario {
  readonly busyTokens: number[][];
  readonly idleMax: number[][];
  readonly idleNext: number[];
  readonly promptLengths: number[];
  readonly added: number;
}
interface FedItem {
  readonly seq: number;
  readonly position: number;
  readonly count: number;
  readonly sampled: number;
}
interface FeedScenario {
  readonly steps: { readonly items: FedItem[]; readonly held: number; readonly fed?: boolean }[];
  readonly tokens: number[][];
  readonly setting: boolean;
  /** The setting of another context meanwhile. */
  readonly other: boolean;
}
interface SplitScenario {
  readonly setting: boolean;
  readonly steps: { readonly items: { seq: number; count: number; sampled: number }[]; readonly split: boolean; readonly logprobs: number[][] }[];
  readonly tokens: number[][];
  readonly step: { readonly out: number[]; readonly split: number };
}
interface PadScenario {
  readonly setting: number;
  readonly steps: { readonly seqs: number[]; readonly sampled: number[]; readonly filled: number; readonly padTo: number; readonly logprobs: number[][] }[];
  readonly idleMax: number[];
  readonly step: { readonly out: number[]; readonly filled: number; readonly padTo: number };
  readonly after: number[];
}
interface ChildResult {
  readonly decodePad: { readonly on: PadScenario; readonly off: PadScenario; readonly other: number; readonly short: { filled: number; padTo: number; seq7: number } };
  readonly decodeSplit: { readonly on: SplitScenario; readonly off: SplitScenario; readonly other: boolean };
  readonly promptAlone: { readonly on: FeedScenario; readonly off: FeedScenario };
  readonly drainPack: { readonly on: FeedScenario; readonly long: FeedScenario; readonly off: FeedScenario };
  readonly gapFill: { readonly off: GapScenario; readonly on: GapScenario; readonly wideOff: GapScenario; readonly wideOne: GapScenario; readonly wideTwo: GapScenario };
  readonly ordered: { readonly steps: number; readonly seen: (Report | string)[] };
  readonly repeat: number[];
  readonly thrown: { readonly calls: number; readonly error: string | null };
  readonly interrupted: { readonly steps: number; readonly calls: number };
}

/**
 * The addon's native step loop, run() (libs/inference/native), driven directly on the bundled
 * model in a child process (test/support/engine-run.child.mjs): the contract the scheduler
 * builds on, below the server; and step()'s filling of holes between busy sequences.
 */
describe('engine addon run()', () => {
  let result: ChildResult;

  beforeAll(() => {
    // The child must end by itself once it has disposed everything: an event-loop handle the
    // addon left open (its per-run wake-up handle) would keep it alive until the timeout.
    const child = spawnSync(process.execPath, [join(ROOT, 'test', 'support', 'engine-run.child.mjs'), ROOT], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 60_000,
    });
    if (child.error || child.status !== 0) {
      throw new Error(`child failed (${child.error?.message ?? `exit ${child.status}, signal ${child.signal}`}): ${child.stderr.slice(-2000)}`);
    }
    result = JSON.parse(child.stdout.trim().split('\n').pop() as string) as ChildResult;
  }, 90_000);

  it('reports every step in order, the prompt first, then one token a step, the last one final', () => {
    const reports = result.ordered.seen.filter((s): s is Report => typeof s === 'object');
    expect(result.ordered.steps).toBe(8);
    expect(reports).toHaveLength(8);
    expect(reports[0].position).toBe(0);
    expect(reports[0].count).toBeGreaterThan(1);
    for (let i = 1; i < reports.length; i++) {
      expect(reports[i].count).toBe(1);
      expect(reports[i].position).toBe(reports[i - 1].position + reports[i - 1].count);
      expect(reports[i].doneAt).toBeGreaterThanOrEqual(reports[i - 1].doneAt);
    }
    for (const r of reports) {
      expect(r.sampled).toBeGreaterThanOrEqual(0);
      expect(r.computeMs).toBeGreaterThan(0);
    }
    expect(reports.map((r) => r.final)).toEqual([false, false, false, false, false, false, false, true]);
  });

  it('hands each step to JavaScript as its own event: what a step queued runs before the next step is reported', () => {
    // The consumers of a step's tokens (promise continuations down to the HTTP write) run before
    // the scheduler sees the next step, even when the loop finished several steps in the meantime.
    expect(result.ordered.seen.map((s) => (typeof s === 'string' ? s : 'step'))).toEqual(
      Array.from({ length: 8 }, (_, i) => ['step', `micro${i}`]).flat(),
    );
  });

  it('is deterministic at temperature 0', () => {
    const first = result.ordered.seen.filter((s): s is Report => typeof s === 'object').map((r) => r.sampled);
    expect(result.repeat).toEqual(first);
  });

  it('stops at a callback that throws and rejects with its error, reporting no later step', () => {
    expect(result.thrown).toEqual({ calls: 3, error: 'boom at step 3' });
  });

  it('ends early on interrupt()', () => {
    // Interrupted from the second report: the loop may already have finished the third step.
    expect(result.interrupted.calls).toBeGreaterThanOrEqual(2);
    expect(result.interrupted.calls).toBeLessThanOrEqual(4);
    expect(result.interrupted.steps).toBe(result.interrupted.calls);
  });

  it('fills a hole between busy sequences with a throwaway token that leaves no trace (setGapFill)', () => {
    const { off, on } = result.gapFill;
    // Sequences 0 and 2 decode four steps while 1 and 3 hold their prompts: the hole at 1 is
    // filled once a step, 3 (after the last busy one) splits nothing and is left alone.
    expect(off.added).toBe(0);
    expect(on.added).toBe(4);
    // The same tokens, for the busy sequences and for the idle ones going on afterwards: the
    // throwaway cell was removed (the idle sequences' cells end where their prompts did).
    expect(on.busyTokens).toEqual(off.busyTokens);
    expect(on.idleNext).toEqual(off.idleNext);
    const prompt = (seq: number): number => on.promptLengths[seq] - 1;
    for (const max of on.idleMax) expect(max).toEqual([prompt(1), prompt(3)]);
  });

  it('takes a fed prompt in alone and the generating sequence a step later (setPromptAlone), not right after another prompt, with the same tokens', () => {
    const { on, off } = result.promptAlone;
    expect([on.setting, off.setting]).toEqual([true, false]);
    // Per context: another context keeps its own (off).
    expect([on.other, off.other]).toEqual([false, false]);
    expect(on.steps[2].fed).toBe(true);
    expect(off.steps[2].fed).toBe(true);
    const layout = (s: FeedScenario, from: number, n: number): [number, number][][] =>
      s.steps.slice(from, from + n).map((step) => step.items.map((it) => [it.seq, it.count > 1 ? 2 : 1]));
    const first = (s: FeedScenario): number => s.steps.findIndex((step) => step.items.some((it) => it.seq === 1));
    // Off: every step that takes a prompt in (one a step: pack limit 1) also decodes the others.
    const offAt = first(off);
    expect(layout(off, offAt, 4)).toEqual([
      [[0, 1], [1, 2]],
      [[0, 1], [1, 1], [2, 2]],
      [[0, 1], [1, 1], [2, 1], [3, 2]],
      [[0, 1], [1, 1], [2, 1], [3, 1]],
    ]);
    expect(off.steps.every((step) => step.held === 0)).toBe(true);
    // On: the first prompt goes alone (sequence 0 held back and reported as held); the next step
    // takes sequence 0 back whatever is fed; the third prompt, right after a step that evaluated
    // one, goes with the others too.
    const onAt = first(on);
    expect(layout(on, onAt, 4)).toEqual([
      [[1, 2]],
      [[0, 1], [1, 1], [2, 2]],
      [[0, 1], [1, 1], [2, 1], [3, 2]],
      [[0, 1], [1, 1], [2, 1], [3, 1]],
    ]);
    expect(on.steps.map((step) => step.held)).toEqual(on.steps.map((_, i) => (i === onAt ? 1 : 0)));
    // Sequence 0 goes on at the position after its previous token.
    const before = on.steps[onAt - 1].items.find((it) => it.seq === 0) as FedItem;
    expect(on.steps[onAt + 1].items[0].position).toBe(before.position + before.count);
    // The same tokens for every sequence, and each got its whole budget.
    expect(on.tokens).toEqual(off.tokens);
    expect(on.tokens.map((t) => t.length)).toEqual([12, 6, 6, 6]);
  });

  it('takes every fed prompt in one step while the generating sequence is about to end (setDrainPack), not otherwise, with the same tokens', () => {
    const { on, long, off } = result.drainPack;
    expect([on.setting, long.setting, off.setting]).toEqual([true, true, false]);
    // Per context: another context keeps its own (off).
    expect([on.other, off.other]).toEqual([false, false]);
    for (const s of [on, long, off]) expect(s.steps[1].fed).toBe(true);
    const prompts = (s: FeedScenario): number[][] =>
      s.steps.map((step) => step.items.filter((it) => it.count > 1).map((it) => it.seq)).filter((seqs) => seqs.length > 0);
    // Sequence 0 (budget 5) has at most three tokens left when the prompts are taken: all three at once.
    expect(prompts(on)).toEqual([[0], [1, 2, 3]]);
    // Budget 40, or the setting off: one a step (pack limit 1).
    expect(prompts(long)).toEqual([[0], [1], [2], [3]]);
    expect(prompts(off)).toEqual([[0], [1], [2], [3]]);
    // The same tokens whatever the layout, and each sequence got its whole budget.
    expect(on.tokens).toEqual(off.tokens);
    expect(on.tokens.map((t) => t.length)).toEqual([5, 4, 4, 4]);
  });

  it('runs a step of two to four one-token items as one decode per item when asked (setDecodeSplit), with the same tokens and log-probabilities', () => {
    const { on, off, other } = result.decodeSplit;
    expect([on.setting, off.setting]).toEqual([true, false]);
    // Per context: another context keeps its own (off).
    expect(other).toBe(false);
    // Budgets 7, 6, 4, 2: the prompt step, then steps of 4, 3, 3, 2, 2 and 1 one-token items.
    expect(on.steps.map((s) => s.items.length)).toEqual([4, 4, 3, 3, 2, 2, 1]);
    expect(off.steps.map((s) => s.items.length)).toEqual([4, 4, 3, 3, 2, 2, 1]);
    // Split where it applies: not the prompt step, not a one-item step; never with the setting off.
    expect(on.steps.map((s) => s.split)).toEqual([false, true, true, true, true, true, false]);
    expect(off.steps.every((s) => s.split === false)).toBe(true);
    expect(on.tokens).toEqual(off.tokens);
    expect(on.tokens.map((t) => t.length)).toEqual([7, 6, 4, 2]);
    // Each split item's log-probabilities are its own (not another item's, not left unset).
    on.steps.forEach((step, i) =>
      step.logprobs.forEach((lp, k) => {
        const same = off.steps[i].logprobs[k];
        expect(lp.slice(0, 2)).toEqual(same.slice(0, 2));
        // One item a decode runs other kernels than the batch (a one-column product against
        // four-column tiles): the values agree to ~1e-4 relative, 6.4e-4 at -7.47 seen with the
        // `haswell` CPU variant.
        for (let j = 2; j < 5; j++) expect(lp[j]).toBeCloseTo(same[j], 2);
      }),
    );
    // step(): two one-token items, split with the setting on; info[1] says so.
    expect(on.step.split).toBe(1);
    expect(off.step.split).toBe(0);
    expect(on.step.out).toEqual(off.step.out);
  });

  it('pads a decode step of five to seven items to eight tokens when asked (setDecodePad), leaving no trace, with the same tokens and log-probabilities', () => {
    const { on, off, other } = result.decodePad;
    expect([on.setting, off.setting]).toEqual([8, 0]);
    // Per context: another context keeps its own (none).
    expect(other).toBe(0);
    // Budgets 5, 5, 5, 5, 5, 3, 2 on sequences 0-6: the prompt step, then 7, 6, 5 and 5 items.
    expect(on.steps.map((s) => s.seqs.length)).toEqual([7, 7, 6, 5, 5]);
    expect(off.steps.map((s) => s.seqs)).toEqual(on.steps.map((s) => s.seqs));
    // Padded where it applies (not the prompt step), with the idle sequences after the run.
    expect(on.steps.map((s) => s.padTo)).toEqual([0, 8, 8, 8, 8]);
    expect(on.steps.map((s) => s.filled)).toEqual([0, 1, 2, 3, 3]);
    expect(off.steps.every((s) => s.padTo === 0 && s.filled === 0)).toBe(true);
    // The same tokens, and each item's own log-probabilities (the throwaway tokens' logits are
    // other rows of the output: nobody reads them).
    expect(on.steps.map((s) => s.sampled)).toEqual(off.steps.map((s) => s.sampled));
    on.steps.forEach((step, i) =>
      step.logprobs.forEach((lp, k) => {
        const same = off.steps[i].logprobs[k];
        expect(lp.slice(0, 2)).toEqual(same.slice(0, 2));
        for (let j = 2; j < 5; j++) expect(lp[j]).toBeCloseTo(same[j], 2);
      }),
    );
    // No cell left behind in the idle sequences that took throwaway tokens.
    expect(on.idleMax).toEqual(off.idleMax);
    // step(): seven items on sequences 1-7, padded before them (sequence 0); info[2] says so.
    expect(on.step).toEqual({ out: off.step.out, filled: 1, padTo: 8 });
    expect(off.step).toEqual({ out: on.step.out, filled: 0, padTo: 0 });
    expect(on.after).toEqual(off.after);
    // Padding that cannot reach its width (too few idle sequences beside the run) adds nothing.
    expect(result.decodePad.short).toEqual({ filled: 0, padTo: 0, seq7: on.after[2] });
  });

  it('fills only holes no longer than the setting', () => {
    const { wideOff, wideOne, wideTwo } = result.gapFill;
    // Sequences 0 and 3 busy: a hole of two (1 and 2), three steps.
    expect(wideOne.added).toBe(0);
    expect(wideTwo.added).toBe(6);
    expect(wideTwo.busyTokens).toEqual(wideOff.busyTokens);
    expect(wideTwo.idleNext).toEqual(wideOff.idleNext);
    for (const max of wideTwo.idleMax) expect(max).toEqual([wideTwo.promptLengths[1] - 1, wideTwo.promptLengths[2] - 1]);
  });
});
