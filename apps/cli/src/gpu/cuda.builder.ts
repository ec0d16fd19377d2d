import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { projectRoot } from '@app/common';

/** Where node-llama-cpp 3.21.1 keeps its prebuilt CUDA backend (loaded from here at run time). */
export function prebuiltCudaDir(root = projectRoot()): string {
  return join(root, 'node_modules', '@node-llama-cpp', 'linux-x64-cuda', 'bins', 'linux-x64-cuda');
}

/** Written next to an installed local build: what it is, for `gpu status` and the startup log. */
export interface LocalCudaBuild {
  readonly architectures: string;
  readonly nvcc: string;
  readonly llamaCppRevision: string;
  readonly builtAt: string;
  readonly seconds: number;
}

const MARKER = 'llm-platform-cuda-build.json';
const BACKUP = 'libggml-cuda.so.prebuilt';

/** The local build installed in node_modules, if any. */
export function installedLocalBuild(root = projectRoot()): LocalCudaBuild | null {
  const marker = join(prebuiltCudaDir(root), MARKER);
  if (!existsSync(marker)) return null;
  try {
    return JSON.parse(readFileSync(marker, 'utf8')) as LocalCudaBuild;
  } catch {
    return null;
  }
}

/** Cache shared with scripts/build-llama-server.sh (the llama.cpp checkout is reused). */
export function cacheRoot(): string {
  return process.env.LLAMA_SERVER_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'llm-platform');
}

/** nvcc from CUDA_PATH, PATH or the usual install folders, with its release ("13.0"). */
export function findNvcc(cudaPath?: string): { path: string; release: string } | null {
  const candidates = [
    cudaPath && join(cudaPath, 'bin', 'nvcc'),
    process.env.CUDA_PATH && join(process.env.CUDA_PATH, 'bin', 'nvcc'),
    'nvcc',
    '/usr/local/cuda/bin/nvcc',
  ].filter((c): c is string => Boolean(c));
  for (const candidate of candidates) {
    try {
      const out = execFileSync(candidate, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      const release = /release (\d+\.\d+)/.exec(out)?.[1];
      if (release) return { path: candidate === 'nvcc' ? resolveOnPath('nvcc') ?? candidate : candidate, release };
    } catch {
      /* not there */
    }
  }
  return null;
}

function resolveOnPath(bin: string): string | null {
  try {
    return execFileSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

/** Compute capabilities of the visible NVIDIA GPUs ("90", "89"), from nvidia-smi; [] without one. */
export function detectArchitectures(): string[] {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=compute_cap', '--format=csv,noheader'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return [...new Set(out.split('\n').map((l) => l.trim().replace('.', '')).filter((l) => /^\d+$/.test(l)))];
  } catch {
    return [];
  }
}

export interface CudaBuildOptions {
  /** CMAKE_CUDA_ARCHITECTURES, e.g. "90" or "89;90". */
  readonly architectures: string;
  readonly jobs?: number;
  readonly cudaPath?: string;
  /** Called with build progress (0..1) and a short description. */
  readonly onProgress?: (fraction: number, detail: string) => void;
  /** Build log lines (configure output, errors). */
  readonly onLog?: (line: string) => void;
}

/**
 * Builds ggml's CUDA backend from the llama.cpp source node-llama-cpp 3.21.1 ships (its git
 * bundle, so nothing is downloaded), for the given architectures, with the local CUDA toolkit,
 * and installs it in place of the prebuilt one (kept as libggml-cuda.so.prebuilt). The prebuilt
 * library needs a driver for CUDA 13.1; a local build runs on what the toolkit here targets.
 */
export async function buildCudaBackend(o: CudaBuildOptions): Promise<LocalCudaBuild> {
  const root = projectRoot();
  const bundle = join(root, 'node_modules', 'node-llama-cpp', 'llama', 'gitRelease.bundle');
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run npm ci first`);
  const target = prebuiltCudaDir(root);
  if (!existsSync(target)) throw new Error(`${target} is missing: the CUDA package of node-llama-cpp is not installed (npm ci on linux-x64)`);
  const nvcc = findNvcc(o.cudaPath);
  if (!nvcc) throw new Error('nvcc not found: install the CUDA toolkit (12.4 or newer) or pass --cuda-path');
  for (const tool of ['git', 'cmake']) {
    if (!resolveOnPath(tool)) throw new Error(`${tool} not found: it is needed to build the CUDA backend`);
  }
  const revision = execFileSync('git', ['bundle', 'list-heads', bundle], { encoding: 'utf8' }).trim().split('\n')[0].split(' ')[0];
  const source = join(cacheRoot(), `llama.cpp-${revision.slice(0, 12)}`);
  if (!existsSync(join(source, '.git'))) {
    o.onLog?.(`extracting llama.cpp ${revision.slice(0, 12)} from node-llama-cpp's bundle into ${source}`);
    rmSync(source, { recursive: true, force: true });
    mkdirSync(dirname(source), { recursive: true });
    execFileSync('git', ['clone', '--quiet', bundle, source], { stdio: 'ignore' });
    execFileSync('git', ['-C', source, 'checkout', '--quiet', revision], { stdio: 'ignore' });
  }
  // ggml's CMake configures this file; llama.cpp's tree (what node-llama-cpp bundles) lacks it.
  const pc = join(source, 'ggml', 'ggml.pc.in');
  if (!existsSync(pc)) writeFileSync(pc, '');

  const cudaHome = cudaToolkitHome(nvcc.path);
  if (!['include', join('targets', 'x86_64-linux', 'include')].some((d) => existsSync(join(cudaHome, d, 'cublas_v2.h')))) {
    throw new Error(`the CUDA toolkit at ${cudaHome} has no cuBLAS headers (cublas_v2.h): install cuBLAS for it (e.g. the libcublas-dev-13-0 package)`);
  }
  const build = join(cacheRoot(), `ggml-cuda-${revision.slice(0, 12)}-sm${o.architectures.replace(/;/g, '_')}`);
  const ninja = resolveOnPath('ninja') !== null;
  const configure = [
    '-S', join(source, 'ggml'), '-B', build, '-G', ninja ? 'Ninja' : 'Unix Makefiles',
    '-DCMAKE_BUILD_TYPE=Release', `-DCMAKE_CUDA_COMPILER=${nvcc.path}`,
    '-DGGML_CUDA=ON', '-DGGML_BACKEND_DL=ON', '-DBUILD_SHARED_LIBS=ON', '-DGGML_NATIVE=OFF',
    `-DCMAKE_CUDA_ARCHITECTURES=${o.architectures}`, '-DGGML_CUDA_FA_ALL_QUANTS=OFF',
    '-DGGML_BUILD_TESTS=OFF', '-DGGML_BUILD_EXAMPLES=OFF',
    // Found next to the prebuilt ggml-base it replaces ($ORIGIN), and the toolkit's runtime
    // (libcudart, libcublas) without LD_LIBRARY_PATH. Never the build tree's own ggml-base.
    '-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON', `-DCMAKE_INSTALL_RPATH=$ORIGIN;${join(cudaHome, 'lib64')};${join(cudaHome, 'lib')}`,
  ];
  const started = Date.now();
  o.onProgress?.(0, 'configuring');
  await run('cmake', configure, (line) => o.onLog?.(line));
  const jobs = o.jobs ?? availableParallelism();
  await run('cmake', ['--build', build, '--target', 'ggml-cuda', '-j', String(jobs)], (line) => {
    // Ninja: "[12/345] Building CUDA object ..."; Make: "[ 12%] Building ...".
    const n = /^\[(\d+)\/(\d+)\]/.exec(line);
    const pct = /^\[\s*(\d+)%\]/.exec(line);
    if (n) o.onProgress?.(Number(n[1]) / Number(n[2]), `${n[1]}/${n[2]}`);
    else if (pct) o.onProgress?.(Number(pct[1]) / 100, '');
    if (/error|warning: .*deprecated/i.test(line) && !/^\[/.test(line)) o.onLog?.(line);
  });
  const built = join(build, 'bin', 'libggml-cuda.so');
  const library = existsSync(built) ? built : findFile(build, 'libggml-cuda.so');
  if (!library) throw new Error(`the build finished but produced no libggml-cuda.so under ${build}`);
  const installed = join(target, 'libggml-cuda.so');
  const backup = join(target, BACKUP);
  if (!existsSync(backup) && !installedLocalBuild(root)) copyFileSync(installed, backup);
  copyFileSync(library, installed);
  const info: LocalCudaBuild = {
    architectures: o.architectures,
    nvcc: nvcc.release,
    llamaCppRevision: revision,
    builtAt: new Date().toISOString(),
    seconds: Math.round((Date.now() - started) / 1000),
  };
  writeFileSync(join(target, MARKER), `${JSON.stringify(info, null, 2)}\n`);
  o.onProgress?.(1, 'installed');
  return info;
}

/** Puts node-llama-cpp's prebuilt CUDA backend back; false when no local build was installed. */
export function restorePrebuilt(root = projectRoot()): boolean {
  const target = prebuiltCudaDir(root);
  const backup = join(target, BACKUP);
  if (!existsSync(backup)) return false;
  copyFileSync(backup, join(target, 'libggml-cuda.so'));
  rmSync(backup);
  rmSync(join(target, MARKER), { force: true });
  return true;
}

/** The toolkit folder of an nvcc (following wrapper scripts and symlinks such as /usr/local/bin/nvcc). */
function cudaToolkitHome(nvccPath: string): string {
  try {
    // nvcc's dry run prints its own variables on stderr, TOP among them (the toolkit folder).
    const out = spawnSync(nvccPath, ['--dryrun', '-x', 'cu', '-c', '/dev/null', '-o', '/dev/null'], { encoding: 'utf8' });
    const top = /TOP=(\S+)/.exec(`${out.stdout}${out.stderr}`)?.[1];
    if (top) return resolve(top);
  } catch {
    /* fall back to the folder above bin/ */
  }
  return dirname(dirname(realpathSync(nvccPath)));
}

function findFile(dir: string, name: string): string | null {
  try {
    const out = execFileSync('find', [dir, '-name', name, '-type', 'f'], { encoding: 'utf8' }).trim().split('\n')[0];
    return out || null;
  } catch {
    return null;
  }
}

function run(command: string, args: string[], onLine: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const feeder = (): ((chunk: Buffer) => void) => {
      let partial = '';
      return (chunk) => {
        const text = chunk.toString();
        tail = (tail + text).slice(-6000);
        const lines = (partial + text).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) if (line.trim()) onLine(line.trim());
      };
    };
    child.stdout.on('data', feeder());
    child.stderr.on('data', feeder());
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${command} ${args.slice(0, 2).join(' ')} failed (exit ${code}):\n${tail.slice(-3000)}`)),
    );
  });
}
