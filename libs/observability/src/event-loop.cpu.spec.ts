import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAIN_THREAD_SCHEDSTAT, mainThreadCpuSeconds } from './event-loop.cpu';

describe('mainThreadCpuSeconds', () => {
  it("reads the first field of schedstat (nanoseconds on the CPU) as seconds", () => {
    const dir = mkdtempSync(join(tmpdir(), 'schedstat-'));
    const file = join(dir, 'schedstat');
    writeFileSync(file, '2500000000 103107733 976\n');
    expect(mainThreadCpuSeconds(file)).toBe(2.5);
    writeFileSync(file, 'garbage\n');
    expect(mainThreadCpuSeconds(file)).toBeNull();
  });

  it('is null where the kernel does not say', () => {
    expect(mainThreadCpuSeconds(join(tmpdir(), 'no-such-dir', 'schedstat'))).toBeNull();
  });

  const linux = process.platform === 'linux' ? it : it.skip;
  linux("counts this process's main thread: it grows with work done here, not with a worker's", async () => {
    const before = mainThreadCpuSeconds(MAIN_THREAD_SCHEDSTAT) as number;
    expect(before).toBeGreaterThan(0);
    const until = performance.now() + 60;
    while (performance.now() < until); // 60 ms of this thread's CPU
    const afterBusy = mainThreadCpuSeconds(MAIN_THREAD_SCHEDSTAT) as number;
    expect(afterBusy - before).toBeGreaterThan(0.04);
    // A worker thread busy for 300 ms while this one sleeps: barely counted here.
    const { Worker } = await import('node:worker_threads');
    const worker = new Worker('const until = performance.now() + 300; while (performance.now() < until);', { eval: true });
    await new Promise((resolve) => worker.once('exit', resolve));
    expect((mainThreadCpuSeconds(MAIN_THREAD_SCHEDSTAT) as number) - afterBusy).toBeLessThan(0.2);
  });
});
