import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { Gauge } from 'prom-client';
import { AppConfig } from '@app/common';
import { GpuMonitor } from './gpu.monitor';
import { parseNvidiaSmi, sampleNvidiaSmi } from './nvidia-smi.sampler';

/** A stand-in nvidia-smi: a real executable printing what the real one prints for two GPUs. */
function fakeNvidiaSmi(output: string, exitCode = 0): string {
  const dir = mkdtempSync(join(tmpdir(), 'fake-smi-'));
  const path = join(dir, 'nvidia-smi');
  writeFileSync(path, `#!/bin/sh\ncat <<'OUT'\n${output}\nOUT\nexit ${exitCode}\n`);
  chmodSync(path, 0o755);
  return path;
}

const TWO_GPUS = '0, NVIDIA H100 80GB HBM3, 87, 40960, 81559\n1, NVIDIA H100 80GB HBM3, [N/A], 1024, 81559';

describe('nvidia-smi sampling', () => {
  it('parses the CSV query output, [N/A] fields as null', () => {
    expect(parseNvidiaSmi(TWO_GPUS)).toEqual([
      { index: '0', name: 'NVIDIA H100 80GB HBM3', utilizationPercent: 87, memoryUsedBytes: 40960 * 1024 * 1024, memoryTotalBytes: 81559 * 1024 * 1024 },
      { index: '1', name: 'NVIDIA H100 80GB HBM3', utilizationPercent: null, memoryUsedBytes: 1024 * 1024 * 1024, memoryTotalBytes: 81559 * 1024 * 1024 },
    ]);
    expect(parseNvidiaSmi('')).toEqual([]);
  });

  it('runs the executable, and says "missing" (no throw) where there is none', async () => {
    await expect(sampleNvidiaSmi(fakeNvidiaSmi(TWO_GPUS))).resolves.toMatchObject({ ok: true, gpus: [{ index: '0' }, { index: '1' }] });
    await expect(sampleNvidiaSmi('/nonexistent/nvidia-smi')).resolves.toEqual({ ok: false, reason: 'missing', message: '/nonexistent/nvidia-smi not found' });
    await expect(sampleNvidiaSmi(fakeNvidiaSmi('NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver', 9))).resolves.toMatchObject({
      ok: false,
      reason: 'failed',
      message: expect.stringContaining('couldn\'t communicate'),
    });
  });
});

describe('GpuMonitor', () => {
  function monitor(): { gpu: GpuMonitor; registry: Registry } {
    const registry = new Registry();
    const gauge = (name: string, labelNames: string[] = []): Gauge<string> => new Gauge({ name, help: name, labelNames, registers: [registry] });
    const gpu = new GpuMonitor(
      AppConfig.with({ GPU_METRICS_INTERVAL_MS: '0' }),
      gauge('gpu_available'),
      gauge('gpu_utilization_percent', ['gpu_id']),
      gauge('gpu_memory_used_bytes', ['gpu_id']),
      gauge('gpu_memory_total_bytes', ['gpu_id']),
    );
    return { gpu, registry };
  }

  it('sets the GPU gauges per GPU from a sample', async () => {
    const { gpu, registry } = monitor();
    gpu.command = fakeNvidiaSmi(TWO_GPUS);
    await gpu.sample();
    const text = await registry.metrics();
    expect(text).toContain('gpu_available 2');
    expect(text).toContain('gpu_utilization_percent{gpu_id="0"} 87');
    expect(text).not.toContain('gpu_utilization_percent{gpu_id="1"}');
    expect(text).toContain(`gpu_memory_used_bytes{gpu_id="1"} ${1024 * 1024 * 1024}`);
  });

  it('reports gpu_available 0 and drops the per-GPU series when the GPU disappears', async () => {
    const { gpu, registry } = monitor();
    gpu.command = fakeNvidiaSmi(TWO_GPUS);
    await gpu.sample();
    gpu.command = '/nonexistent/nvidia-smi';
    await expect(gpu.sample()).resolves.toMatchObject({ ok: false, reason: 'missing' });
    const text = await registry.metrics();
    expect(text).toContain('gpu_available 0');
    expect(text).not.toMatch(/gpu_utilization_percent\{/);
    expect(text).not.toMatch(/gpu_memory_used_bytes\{/);
  });
});
