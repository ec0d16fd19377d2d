import { waitQuiet } from './bench.processes';

/** A process whose CPU time grows by `perWindow[k]` ms in its k-th window of 100 ms, then by nothing. */
function spinning(perWindow: number[]): { cpuMs: () => number; sleep: (ms: number) => Promise<void>; slept: number[] } {
  let cpu = 1000;
  let window = 0;
  const slept: number[] = [];
  return {
    cpuMs: () => cpu,
    sleep: async (ms) => {
      slept.push(ms);
      cpu += perWindow[window++] ?? 0;
    },
    slept,
  };
}

describe('waitQuiet', () => {
  it('waits while the process spins and stops at its first quiet window', async () => {
    // llama-server after a burst: 110 and 60 ms of CPU in its first two 100 ms, then nothing.
    const p = spinning([110, 60, 0, 0]);
    await expect(waitQuiet(p.cpuMs, { sleep: p.sleep })).resolves.toBe(300);
  });

  it('takes a process that was already idle after one window', async () => {
    const p = spinning([0]);
    await expect(waitQuiet(p.cpuMs, { sleep: p.sleep })).resolves.toBe(100);
  });

  it('counts a tick of the clock (10 ms) as busy and less as quiet', async () => {
    const p = spinning([10, 9]);
    await expect(waitQuiet(p.cpuMs, { sleep: p.sleep })).resolves.toBe(200);
  });

  it('gives up after maxMs on a process that never goes quiet', async () => {
    const p = spinning(new Array(100).fill(50));
    await expect(waitQuiet(p.cpuMs, { sleep: p.sleep, maxMs: 1000 })).resolves.toBe(1000);
    expect(p.slept).toHaveLength(10);
  });

  it('waits a fixed time where the CPU time cannot be read', async () => {
    const slept: number[] = [];
    await expect(waitQuiet(() => null, { sleep: async (ms) => void slept.push(ms) })).resolves.toBe(500);
    expect(slept).toEqual([500]);
  });
});
