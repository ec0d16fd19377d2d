import { execFile } from 'node:child_process';

/** One GPU as nvidia-smi reports it. */
export interface GpuSample {
  readonly index: string;
  readonly name: string;
  /** 0–100, or null when the driver does not report it ("[N/A]"). */
  readonly utilizationPercent: number | null;
  readonly memoryUsedBytes: number | null;
  readonly memoryTotalBytes: number | null;
}

export type GpuReading =
  | { readonly ok: true; readonly gpus: readonly GpuSample[] }
  /** `missing`: no nvidia-smi on this machine (no GPU: normal); `failed`: it ran and failed. */
  | { readonly ok: false; readonly reason: 'missing' | 'failed'; readonly message: string };

const QUERY = ['--query-gpu=index,name,utilization.gpu,memory.used,memory.total', '--format=csv,noheader,nounits'];
const MIB = 1024 * 1024;

function num(field: string | undefined): number | null {
  const n = Number(field?.trim());
  return field === undefined || field.trim() === '' || !Number.isFinite(n) ? null : n;
}

/** Parses `nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits`. */
export function parseNvidiaSmi(csv: string): GpuSample[] {
  return csv
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length > 0)
    .map((line) => {
      const [index, name, util, used, total] = line.split(',').map((f) => f.trim());
      const usedMiB = num(used);
      const totalMiB = num(total);
      return {
        index: index ?? '0',
        name: name ?? 'unknown',
        utilizationPercent: num(util),
        memoryUsedBytes: usedMiB === null ? null : usedMiB * MIB,
        memoryTotalBytes: totalMiB === null ? null : totalMiB * MIB,
      };
    })
    .filter((gpu) => /^\d+$/.test(gpu.index));
}

/** Runs nvidia-smi once (a GPU-less machine answers `missing`, never throws). */
export function sampleNvidiaSmi(command = 'nvidia-smi', timeoutMs = 5000): Promise<GpuReading> {
  return new Promise((resolve) => {
    execFile(command, QUERY, { timeout: timeoutMs, windowsHide: true }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') resolve({ ok: false, reason: 'missing', message: `${command} not found` });
        else resolve({ ok: false, reason: 'failed', message: (String(stderr).trim() || String(stdout).trim() || err.message).split('\n')[0] });
        return;
      }
      resolve({ ok: true, gpus: parseNvidiaSmi(String(stdout)) });
    });
  });
}
