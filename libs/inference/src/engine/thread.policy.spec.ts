import { AdaptiveThreadPolicy, threadCandidates } from './thread.policy';

/** Runs `steps` steps of one kind against a machine whose compute time per token is `msPerToken(threads)`. */
function drive(policy: AdaptiveThreadPolicy, steps: number, msPerToken: (threads: number) => number, sequences = 1, tokens = 1): number[] {
  const chosen: number[] = [];
  for (let i = 0; i < steps; i++) {
    const threads = policy.choose(sequences, tokens);
    chosen.push(threads);
    policy.record(sequences, tokens, threads, msPerToken(threads) * tokens);
  }
  return chosen;
}
const share = (chosen: number[], threads: number): number => chosen.filter((t) => t === threads).length / chosen.length;

describe('threadCandidates', () => {
  it('compares all cores, half and one', () => {
    expect(threadCandidates(2)).toEqual([2, 1]);
    expect(threadCandidates(16)).toEqual([16, 8, 1]);
    expect(threadCandidates(1)).toEqual([1]);
  });
});

describe('AdaptiveThreadPolicy', () => {
  it('with one core there is nothing to choose', () => {
    const policy = new AdaptiveThreadPolicy(1);
    expect(drive(policy, 10, () => 5)).toEqual(Array(10).fill(1));
  });

  it('settles on the faster count and spends few steps on the other', () => {
    const policy = new AdaptiveThreadPolicy(2);
    const chosen = drive(policy, 1000, (t) => (t === 2 ? 3 : 6));
    expect(share(chosen.slice(100), 2)).toBeGreaterThan(0.97);
    expect(share(chosen.slice(100), 1)).toBeGreaterThan(0); // still checked now and then
  });

  it('switches when the machine changes (another process takes a core), and back when it frees it', () => {
    const policy = new AdaptiveThreadPolicy(2);
    let busy = false;
    // Busy: two threads wait for each other at every barrier while one is descheduled.
    const machine = (t: number): number => (busy ? (t === 2 ? 60 : 9) : t === 2 ? 3 : 6);
    drive(policy, 300, machine);
    busy = true;
    const underLoad = drive(policy, 1500, machine);
    expect(share(underLoad.slice(500), 1)).toBeGreaterThan(0.95);
    busy = false;
    const after = drive(policy, 1500, machine);
    expect(share(after.slice(500), 2)).toBeGreaterThan(0.95);
  });

  it('exploring a much slower count costs little time: the slower it is, the rarer it is tried', () => {
    const policy = new AdaptiveThreadPolicy(2);
    // 2 threads 30x slower than 1 (another busy process on a 2-core machine).
    const machine = (t: number): number => (t === 2 ? 300 : 10);
    drive(policy, 100, machine);
    const chosen = drive(policy, 5000, machine);
    const time = chosen.reduce((sum, t) => sum + machine(t), 0);
    const ideal = chosen.length * machine(1);
    expect(time / ideal).toBeLessThan(1.06);
    expect(share(chosen, 2)).toBeGreaterThan(0); // still tried now and then
  });

  it('keeps separate estimates per kind of step (one sequence, many, prompt chunks)', () => {
    const policy = new AdaptiveThreadPolicy(2);
    // One sequence: 1 thread is faster here; 8 sequences and prompts: 2 threads are.
    const machine = (sequences: number) => (t: number) => (sequences === 1 ? (t === 1 ? 4 : 5) : t === 2 ? 2 : 4);
    for (let round = 0; round < 40; round++) {
      drive(policy, 20, machine(1), 1, 1);
      drive(policy, 20, machine(8), 8, 8);
      drive(policy, 5, machine(8), 1, 128);
    }
    expect(share(drive(policy, 200, machine(1), 1, 1), 1)).toBeGreaterThan(0.9);
    expect(share(drive(policy, 200, machine(8), 8, 8), 2)).toBeGreaterThan(0.9);
    const snapshot = policy.snapshot();
    expect(Object.keys(snapshot).sort()).toEqual(['decode1', 'decode8', 'prompt']);
  });

  it('ignores measurements it cannot use', () => {
    const policy = new AdaptiveThreadPolicy(2);
    policy.record(1, 1, 2, NaN);
    policy.record(1, 1, 3, 5);
    policy.record(1, 0, 2, 5);
    expect(policy.snapshot()).toEqual({});
  });
});
