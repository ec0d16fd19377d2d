import { createHash } from 'node:crypto';
import { createReadStream, existsSync, openSync, readSync, closeSync, rmSync, statSync, truncateSync } from 'node:fs';
import { basename, join } from 'node:path';

/** What `model pull` did. */
export interface PullResult {
  readonly path: string;
  readonly bytes: number;
  /** SHA-256 of the file (hex). */
  readonly sha256: string;
  /** Where the expected checksum came from; null when none was known. */
  readonly verifiedAgainst: 'option' | 'server' | null;
  /** True when the file was already there, complete and matching (nothing downloaded). */
  readonly alreadyPresent: boolean;
}

export interface PullOptions {
  /** A URL (http, https) or a Hugging Face URI (`hf:owner/repo/file.gguf`, `hf:owner/repo:Q4_K_M`). */
  readonly uri: string;
  readonly dir: string;
  /** File name to save as (default: the remote file's name). */
  readonly fileName?: string;
  /** Expected SHA-256 (hex); else the server's when it gives one (Hugging Face's X-Linked-Etag). */
  readonly sha256?: string;
  /** Download again even if the file is there. */
  readonly force?: boolean;
  readonly onProgress?: (downloaded: number, total: number) => void;
  readonly signal?: AbortSignal;
}

const GGUF_MAGIC = 'GGUF';
/** Longest wait for the remote file's size and name (hf: URIs are resolved through the hub's API). */
const RESOLVE_TIMEOUT_MS = 60_000;

function withTimeout<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]).finally(() => clearTimeout(timer));
}

/** Fails fast, with the reason, for a URL that cannot be downloaded (unreachable host, 404, 401). */
async function reachable(url: string, signal?: AbortSignal): Promise<void> {
  let res: Response;
  try {
    res = await fetch(url, { method: 'HEAD', signal: signal ?? AbortSignal.timeout(30_000) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new Error(`cannot reach ${url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
  }
  if (res.status === 404) throw new Error(`${url} was not found (404)`);
  if (res.status === 401 || res.status === 403) throw new Error(`${url} answered ${res.status}: the file needs credentials (HF_TOKEN for Hugging Face)`);
  if (res.status >= 400 && res.status !== 405) throw new Error(`${url} answered ${res.status}`);
}

/** SHA-256 of a file, streamed. */
export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => hash.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/**
 * The checksum the server publishes for the file, if any: Hugging Face answers a HEAD on a
 * `resolve/` URL of an LFS file with `X-Linked-Etag: "<sha256>"` (before its redirect to the CDN).
 */
async function publishedSha256(url: string, signal?: AbortSignal): Promise<string | null> {
  try {
    const res = await fetch(url, { method: 'HEAD', redirect: 'manual', signal: signal ?? AbortSignal.timeout(15_000) });
    const etag = res.headers.get('x-linked-etag') ?? res.headers.get('x-checksum-sha256');
    const m = etag ? /^(?:W\/)?"?([0-9a-f]{64})"?$/i.exec(etag.trim()) : null;
    return m ? m[1].toLowerCase() : null;
  } catch {
    return null;
  }
}

function isGguf(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(4);
    readSync(fd, head, 0, 4, 0);
    return head.toString('latin1') === GGUF_MAGIC;
  } finally {
    closeSync(fd);
  }
}

/**
 * Downloads a model with node-llama-cpp's downloader (ipull: parallel ranged requests). The
 * file is written as `<name>.ipull` with its progress beside the data and renamed when complete,
 * so an interrupted pull (Ctrl-C, a killed process, a dropped connection) resumes where it
 * stopped when the same command runs again. Then the checksum (given, or published by the
 * server) and the GGUF magic are checked; a file that fails either is deleted.
 */
export async function pullModel(o: PullOptions): Promise<PullResult> {
  const { createModelDownloader } = await import('node-llama-cpp');
  const expected = o.sha256?.toLowerCase();
  if (expected !== undefined && !/^[0-9a-f]{64}$/.test(expected)) throw new Error(`--sha256 must be 64 hex characters (got ${JSON.stringify(o.sha256)})`);
  // ipull retries a host that refuses connections without end: a plain URL is checked first.
  if (/^https?:\/\//i.test(o.uri)) await reachable(o.uri, o.signal);
  const downloader = await withTimeout(createModelDownloader({
    modelUri: o.uri,
    dirPath: o.dir,
    fileName: o.fileName,
    // false: ipull then keeps its progress in the `.ipull` file, which is what makes a pull resumable.
    skipExisting: false,
    deleteTempFileOnCancel: false,
    showCliProgress: false,
    onProgress: o.onProgress ? ({ downloadedSize, totalSize }) => o.onProgress?.(downloadedSize, totalSize) : undefined,
  }), RESOLVE_TIMEOUT_MS, `could not resolve ${o.uri} within ${RESOLVE_TIMEOUT_MS / 1000} s (is the host reachable?)`);
  const path = downloader.entrypointFilePath;
  if (downloader.totalFiles !== 1) {
    await downloader.cancel({ deleteTempFile: false });
    throw new Error(`${o.uri} is a split model (${downloader.totalFiles} files); pull a single-file GGUF`);
  }
  const remoteUrl = (downloader as unknown as { _modelUrl?: string })._modelUrl;
  const published = expected ? null : remoteUrl && /^https?:/.test(remoteUrl) ? await publishedSha256(remoteUrl, o.signal) : null;
  const want = expected ?? published;
  if (!o.force && existsSync(path) && statSync(path).size === downloader.totalSize) {
    await downloader.cancel({ deleteTempFile: true });
    rmSync(`${path}.ipull`, { force: true });
    const sha256 = await sha256File(path);
    if (want && sha256 !== want) throw new Error(`${path} exists but its SHA-256 is ${sha256}, not ${want}; delete it or pull with --force`);
    return { path, bytes: statSync(path).size, sha256, verifiedAgainst: want ? (expected ? 'option' : 'server') : null, alreadyPresent: true };
  }
  // ipull's download does not always settle when cancelled mid-transfer (a request that hangs):
  // an interruption closes the downloader (the part written so far stays) and ends here.
  const aborted = new Promise<never>((_, reject) => {
    const stop = (): void => {
      void Promise.race([downloader.cancel({ deleteTempFile: false }), new Promise((r) => setTimeout(r, 2000))]).finally(() => reject(o.signal?.reason ?? new Error('interrupted')));
    };
    if (o.signal?.aborted) stop();
    else o.signal?.addEventListener('abort', stop, { once: true });
  });
  aborted.catch(() => undefined);
  await Promise.race([downloader.download(), aborted]);
  settleSize(path, downloader.totalSize);
  const sha256 = await sha256File(path);
  if (want && sha256 !== want) {
    const size = statSync(path).size;
    rmSync(path, { force: true });
    throw new Error(`checksum mismatch for ${basename(path)}: expected ${want} (${expected ? '--sha256' : 'published by the server'}), got ${sha256} (${size} bytes, the server announced ${downloader.totalSize}); the file was deleted`);
  }
  if (!isGguf(path)) {
    rmSync(path, { force: true });
    throw new Error(`${o.uri} is not a GGUF file (no GGUF magic at its start); the file was deleted`);
  }
  return { path, bytes: statSync(path).size, sha256, verifiedAgainst: want ? (expected ? 'option' : 'server') : null, alreadyPresent: false };
}

/**
 * ipull keeps its progress as JSON after the data and truncates it away when the download ends,
 * but a progress save already under way can land after that truncation (a write and a truncate
 * on different libuv threads): the finished file then ends with a few hundred bytes of JSON.
 * The data before the announced size is complete once download() resolves, so the tail goes;
 * a file shorter than announced is an incomplete download: deleted, and said as such rather than
 * as a bad checksum.
 */
export function settleSize(path: string, announced: number): void {
  if (!(announced > 0)) return; // size unknown (no Content-Length): nothing to hold the file to
  const size = statSync(path).size;
  if (size > announced) truncateSync(path, announced);
  else if (size < announced) {
    rmSync(path, { force: true });
    throw new Error(`the download of ${basename(path)} ended at ${size} of ${announced} bytes; the file was deleted, pull it again`);
  }
}

/** The partial download of a pull that was interrupted, if any (`<file>.ipull`). */
export function partialDownload(dir: string, fileName: string): string | null {
  const partial = join(dir, `${fileName}.ipull`);
  return existsSync(partial) ? partial : null;
}
