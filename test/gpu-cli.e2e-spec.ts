import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from './support/cli';
import { ROOT } from './support/server-process';

const PREBUILT = join(ROOT, 'node_modules', '@node-llama-cpp', 'linux-x64-cuda', 'bins', 'linux-x64-cuda');
const gpuVisible = existsSync('/dev/nvidiactl') || existsSync('/dev/nvidia0');

/**
 * `gpu build|status|restore` as a user on a machine without a GPU meets them (CI): the build
 * itself (minutes, needs nvcc and cuBLAS) is checked by hand on a GPU machine, see README "GPU".
 */
describe('gpu CLI', () => {
  (gpuVisible ? it.skip : it)('status says which backend is installed and that no GPU is visible', async () => {
    const r = await runCli(['gpu', 'status', '--json'], {});
    expect(r.code).toBe(0);
    const status = JSON.parse(r.stdout) as { backend: string; gpuArchitectures: string[]; probe: string };
    expect(status.gpuArchitectures).toEqual([]);
    expect(status.probe).toBe('no GPU visible');
    const local = existsSync(join(PREBUILT, 'llm-platform-cuda-build.json'));
    expect(status.backend).toBe(local ? 'local build' : 'node-llama-cpp prebuilt (CUDA 13.1)');
  });

  (gpuVisible ? it.skip : it)('build without a visible GPU asks for --arch, and refuses a malformed one', async () => {
    const noGpu = await runCli(['gpu', 'build'], {});
    expect(noGpu.code).toBe(1);
    expect(noGpu.stderr).toContain('no NVIDIA GPU visible (nvidia-smi): pass --arch');
    const bad = await runCli(['gpu', 'build', '--arch', 'hopper'], {});
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('expected compute capabilities such as 90 or 89,90');
  });
});
