import { Command, Option, SubCommand } from 'nest-commander';
import { AppConfig } from '@app/common';
import { probeGpu } from '@app/inference';
import { BaseCommand, OptionValueError } from '../base.command';
import { ProgressBar } from '../support/progress.bar';
import { positiveInt } from '../support/options';
import { buildCudaBackend, detectArchitectures, findNvcc, installedLocalBuild, prebuiltCudaDir, restorePrebuilt } from './cuda.builder';

interface BuildOptions {
  arch?: string;
  jobs?: number;
  cudaPath?: string;
  probe?: boolean;
}

@SubCommand({
  name: 'build',
  description: "Build node-llama-cpp's CUDA backend here, for this machine's GPUs and CUDA toolkit (when the prebuilt one cannot run)",
})
export class GpuBuildCommand extends BaseCommand {
  constructor(private readonly config: AppConfig) {
    super();
  }

  async run(_args: string[], o: BuildOptions): Promise<void> {
    const detected = detectArchitectures();
    const architectures = o.arch ?? detected.join(';');
    if (!architectures) {
      throw new Error('no NVIDIA GPU visible (nvidia-smi): pass --arch, e.g. --arch 90 for H100/H200, 89 for L4/RTX 40xx, 80 for A100');
    }
    const nvcc = findNvcc(o.cudaPath);
    process.stderr.write(
      `Building ggml's CUDA backend for sm_${architectures.replace(/;/g, ', sm_')} with nvcc ${nvcc?.release ?? '(not found)'}; ` +
        `one architecture takes ~3-4 min on 16 cores, much longer on few.\n`,
    );
    const bar = new ProgressBar('  compiling');
    const info = await buildCudaBackend({
      architectures,
      jobs: o.jobs,
      cudaPath: o.cudaPath,
      onProgress: (f, detail) => bar.update(f, detail),
      onLog: (line) => {
        bar.done();
        process.stderr.write(`  ${line}\n`);
      },
    });
    bar.done();
    process.stdout.write(`Installed the local CUDA backend (sm_${info.architectures}, nvcc ${info.nvcc}) in ${prebuiltCudaDir()} after ${info.seconds} s.\n`);
    if (o.probe === false || detected.length === 0) {
      process.stdout.write('No GPU here to check it on: start the server with GPU=cuda on the GPU machine; its log names the backend in use.\n');
      return;
    }
    const probe = await probeGpu('cuda', this.config.modelPath);
    if (probe.gpu) process.stdout.write('Checked: a one-token decode on the GPU works. GPU=auto (the default) will use it.\n');
    else throw new Error(`the GPU probe still fails: ${probe.fallbackReason}`);
  }

  @Option({ flags: '--arch <list>', description: 'CUDA architectures, comma list (default: the visible GPUs, e.g. 90)' })
  parseArch(v: string): string {
    const list = v.split(',').map((a) => a.trim().replace(/^sm_/, '').replace('.', ''));
    if (list.some((a) => !/^\d{2,3}[af]?$/.test(a))) throw new OptionValueError('expected compute capabilities such as 90 or 89,90');
    return list.join(';');
  }
  @Option({ flags: '--jobs <n>', description: 'Parallel compile jobs (default: cores)' })
  parseJobs(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--cuda-path <dir>', description: 'CUDA toolkit folder (default: CUDA_PATH, nvcc on PATH, /usr/local/cuda)' })
  parseCudaPath(v: string): string {
    return v;
  }
  @Option({ flags: '--no-probe', description: 'Do not check the build with a one-token decode afterwards' })
  parseNoProbe(): boolean {
    return false;
  }
}

@SubCommand({ name: 'status', description: 'Which CUDA backend is installed, the toolkit and GPUs seen, and whether the GPU probe passes' })
export class GpuStatusCommand extends BaseCommand {
  constructor(private readonly config: AppConfig) {
    super();
  }

  async run(_args: string[], o: { json?: boolean }): Promise<void> {
    const local = installedLocalBuild();
    const nvcc = findNvcc();
    const gpus = detectArchitectures();
    const probe = gpus.length ? await probeGpu('cuda', this.config.modelPath) : null;
    const status = {
      backend: local ? 'local build' : 'node-llama-cpp prebuilt (CUDA 13.1)',
      localBuild: local,
      nvcc: nvcc?.release ?? null,
      gpuArchitectures: gpus,
      probe: probe ? (probe.gpu ? 'ok' : probe.fallbackReason) : 'no GPU visible',
    };
    if (o.json) {
      process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
      return;
    }
    process.stdout.write(
      [
        `CUDA backend: ${status.backend}${local ? ` (sm_${local.architectures}, nvcc ${local.nvcc}, ${local.builtAt})` : ''}`,
        `CUDA toolkit: ${status.nvcc ? `nvcc ${status.nvcc}` : 'not found'}`,
        `GPUs: ${gpus.length ? gpus.map((a) => `sm_${a}`).join(', ') : 'none visible'}`,
        `GPU probe: ${status.probe}`,
        '',
      ].join('\n'),
    );
  }

  @Option({ flags: '--json', description: 'Machine-readable output' })
  parseJson(): boolean {
    return true;
  }
}

@SubCommand({ name: 'restore', description: "Put node-llama-cpp's prebuilt CUDA backend back (undo gpu build)" })
export class GpuRestoreCommand extends BaseCommand {
  async run(): Promise<void> {
    process.stdout.write(restorePrebuilt() ? 'Restored the prebuilt CUDA backend.\n' : 'No local build was installed; nothing to restore.\n');
  }
}

@Command({ name: 'gpu', description: 'GPU backend commands', subCommands: [GpuBuildCommand, GpuStatusCommand, GpuRestoreCommand] })
export class GpuCommand extends BaseCommand {
  async run(): Promise<void> {
    this.command.help();
  }
}
