import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { projectRoot, type GpuChoice } from '@app/common';

export interface GpuProbeResult {
  /** Backend that passed a one-token decode, or false for CPU. */
  readonly gpu: 'cuda' | 'vulkan' | 'metal' | false;
  /** Why a requested GPU backend was not used; null when none was refused. */
  readonly fallbackReason: string | null;
}

/**
 * Loads the backend and decodes one token in a child process. Some GPU backends fail by
 * aborting the whole process inside ggml (node-llama-cpp's prebuilt CUDA library on an older
 * driver: "the provided PTX was compiled with an unsupported toolchain"), which no JS handler
 * can catch; the child dies instead of the server.
 */
const PROBE_SOURCE = `
const { getLlama } = await import('node-llama-cpp');
const choice = process.env.PROBE_GPU;
const llama = await getLlama({ gpu: choice === 'auto' ? 'auto' : choice, build: 'never', logLevel: 'error', progressLogs: false });
if (!llama.gpu) { process.stdout.write(JSON.stringify({ gpu: false })); process.exit(0); }
const model = await llama.loadModel({ modelPath: process.env.PROBE_MODEL, gpuLayers: 1 });
const context = await model.createContext({ contextSize: 256, sequences: 1 });
const sequence = context.getSequence();
const bos = model.tokens.bos ?? model.tokenize('a')[0];
const it = sequence.evaluate([bos], { temperature: 0 });
await it.next();
process.stdout.write(JSON.stringify({ gpu: llama.gpu }));
process.exit(0);
`;

/** True when the machine shows no sign of a GPU, so that `auto` can skip the child process. */
function noGpuVisible(): boolean {
  if (process.platform === 'darwin') return false;
  return !existsSync('/dev/nvidiactl') && !existsSync('/dev/nvidia0') && !existsSync('/dev/dri') && !existsSync('/dev/kfd');
}

export async function probeGpu(choice: GpuChoice, modelPath: string, timeoutMs = 120_000): Promise<GpuProbeResult> {
  if (choice === 'cpu') return { gpu: false, fallbackReason: null };
  if (choice === 'auto' && noGpuVisible()) return { gpu: false, fallbackReason: null };
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', PROBE_SOURCE], {
      cwd: projectRoot(),
      env: { ...process.env, PROBE_GPU: choice, PROBE_MODEL: modelPath, NODE_OPTIONS: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      try {
        if (code === 0) {
          const parsed = JSON.parse(out) as { gpu: GpuProbeResult['gpu'] };
          return resolve({ gpu: parsed.gpu, fallbackReason: null });
        }
      } catch {
        /* fall through to the failure report */
      }
      const lines = err.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('at ') && !l.startsWith('Node.js v'));
      const lastLine = lines.filter((l) => /error|abort|fail/i.test(l)).pop() ?? lines.pop() ?? '';
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      resolve({ gpu: false, fallbackReason: `GPU backend "${choice}" probe ${how}${lastLine ? `: ${lastLine}` : ''}` });
    });
  });
}
