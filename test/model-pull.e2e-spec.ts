import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUNDLED_MODEL } from '@app/common';
import { synthesizeModel } from '@app/inference';
import { CLI, runCli } from './support/cli';
import { post, sleep, waitFor } from './support/http';
import { freePort } from './support/server-process';
import { startTestApp, TestApp } from './support/test-app';

/**
 * `model pull` against a loopback HTTP server that serves a GGUF with Range support, as a model
 * hub does (plain URLs, and Hugging Face's `resolve/main` layout with X-Linked-Etag for hf: URIs
 * through HF_ENDPOINT): progress, an interrupted transfer resumed by the next pull, checksums,
 * a file that is not a GGUF, and a running server that serves the pulled model at once.
 */
interface Served {
  readonly method: string;
  readonly path: string;
  readonly range: string | undefined;
  bytes: number;
}

class ModelHub {
  readonly log: Served[] = [];
  /** While set, ranges that do not start at 0 send nothing (a transfer that hangs mid-way). */
  stallOthers = false;
  #server!: Server;
  url = '';

  constructor(private readonly files: Record<string, Buffer>) {}

  async start(): Promise<void> {
    this.#server = createServer((req, res) => this.#serve(req, res));
    await new Promise<void>((r) => this.#server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise((r) => this.#server.close(r));
  }

  #serve(req: IncomingMessage, res: ServerResponse): void {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const name = path.split('/').pop() as string;
    const data = this.files[name];
    const entry: Served = { method: req.method ?? 'GET', path, range: req.headers.range, bytes: 0 };
    this.log.push(entry);
    if (!data) {
      res.writeHead(404).end();
      return;
    }
    let start = 0;
    let end = data.length - 1;
    const m = req.headers.range ? /^bytes=(\d+)-(\d*)$/.exec(req.headers.range) : null;
    if (m) {
      start = Number(m[1]);
      if (m[2]) end = Math.min(end, Number(m[2]));
    }
    const headers: Record<string, string | number> = {
      'Accept-Ranges': 'bytes',
      'Content-Type': 'application/octet-stream',
      'Content-Length': end - start + 1,
      ETag: '"v1"',
    };
    // Hugging Face publishes an LFS file's SHA-256 as X-Linked-Etag.
    if (path.includes('/resolve/main/')) headers['X-Linked-Etag'] = `"${createHash('sha256').update(data).digest('hex')}"`;
    if (m) headers['Content-Range'] = `bytes ${start}-${end}/${data.length}`;
    res.writeHead(m ? 206 : 200, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    if (this.stallOthers && start > 0) return; // headers sent, then silence
    // 256 KiB every 10 ms: fast, but a transfer of several MiB takes a moment.
    let pos = start;
    const pump = (): void => {
      while (pos <= end) {
        const chunk = data.subarray(pos, Math.min(end + 1, pos + 256 * 1024));
        pos += chunk.length;
        entry.bytes += chunk.length;
        if (!res.write(chunk)) {
          res.once('drain', () => setTimeout(pump, 10));
          return;
        }
      }
      res.end();
    };
    pump();
  }
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('model pull', () => {
  let hub: ModelHub;
  let model: Buffer;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hub-'));
    // ~12 MB: ipull fetches in 5 MiB parts, so an interrupted pull has parts done and parts not.
    synthesizeModel(join(dir, 'remote.gguf'), { dim: 384, layers: 6, heads: 6, kvHeads: 6, ffn: 1024, vocab: 512, context: 2048, type: 8 as never }, BUNDLED_MODEL, 3);
    model = readFileSync(join(dir, 'remote.gguf'));
    hub = new ModelHub({ 'tiny-chat.gguf': model, 'page.gguf': Buffer.from('<html>Not found</html>'.padEnd(4096, ' ')) });
    await hub.start();
  });
  afterAll(() => hub.stop());
  afterEach(() => (hub.stallOthers = false));

  it('downloads a URL into MODELS_DIR with progress, and resumes an interrupted transfer where it stopped', async () => {
    const modelsDir = mkdtempSync(join(tmpdir(), 'pulled-'));
    const env = { MODELS_DIR: modelsDir, LOG_LEVEL: 'error' };
    const url = `${hub.url}/files/tiny-chat.gguf`;

    // First pull: the transfer hangs after the first part; the user presses Ctrl-C.
    hub.stallOthers = true;
    const child = spawn(process.execPath, [CLI, 'model', 'pull', url, '--url', 'http://127.0.0.1:9'], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', r));
    const firstPart = (): Served | undefined => hub.log.find((e) => e.range?.startsWith('bytes=0-') && e.bytes > 0);
    await waitFor(() => {
      const part = firstPart();
      const size = part ? Number(/bytes=0-(\d+)/.exec(part.range as string)?.[1]) + 1 : 0;
      return part !== undefined && part.bytes === size;
    }, 30_000);
    // ipull writes what it has (and its progress, after the data) every few seconds.
    await waitFor(() => readdirSync(modelsDir).includes('tiny-chat.gguf.ipull'), 30_000);
    await sleep(1000);
    expect(readdirSync(modelsDir)).toEqual(['tiny-chat.gguf.ipull']);
    child.kill('SIGINT');
    expect(await exited).toBe(1);
    expect(readdirSync(modelsDir)).toEqual(['tiny-chat.gguf.ipull']);
    expect(stderr).toMatch(/Downloading .*tiny-chat\.gguf: \d+% \(/);
    expect(stderr).toMatch(/download interrupted; the part downloaded so far is kept .*run the same command again to resume/);
    expect(existsSync(join(modelsDir, 'tiny-chat.gguf'))).toBe(false);

    // Second pull: resumes, fetching only what the first did not finish.
    hub.stallOthers = false;
    const mark = hub.log.length;
    const second = await runCli(['model', 'pull', url, '--url', 'http://127.0.0.1:9'], env);
    expect(second.code).toBe(0);
    const requests = hub.log.slice(mark).filter((e) => e.method === 'GET' && e.range);
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.some((e) => e.range?.startsWith('bytes=0-'))).toBe(false);
    const resent = requests.reduce((n, e) => n + e.bytes, 0);
    expect(resent).toBeLessThan(model.length);
    expect(readFileSync(join(modelsDir, 'tiny-chat.gguf')).equals(model)).toBe(true);
    expect(readdirSync(modelsDir)).toEqual(['tiny-chat.gguf']);
    expect(second.stdout).toContain(`Downloaded: ${join(modelsDir, 'tiny-chat.gguf')}`);
    expect(second.stdout).toContain(`sha256    ${sha256(model)}`);
    expect(second.stdout).toContain('no checksum known');
    expect(second.stderr).toMatch(/: 100% \(/);

    // Third pull: the file is there and complete; nothing is downloaded.
    const mark3 = hub.log.length;
    const third = await runCli(['model', 'pull', url, '--url', 'http://127.0.0.1:9', '--json'], env);
    expect(JSON.parse(third.stdout)).toMatchObject({ alreadyPresent: true, sha256: sha256(model), id: 'tiny-chat' });
    expect(hub.log.slice(mark3).filter((e) => e.range)).toEqual([]);
    expect(readdirSync(modelsDir)).toEqual(['tiny-chat.gguf']);
  });

  it('hf: URIs resolve through HF_ENDPOINT; the published SHA-256 is checked; a wrong --sha256 or a non-GGUF file is deleted', async () => {
    const modelsDir = mkdtempSync(join(tmpdir(), 'pulled-hf-'));
    const env = { MODELS_DIR: modelsDir, HF_ENDPOINT: hub.url, LOG_LEVEL: 'error' };
    const ok = await runCli(['model', 'pull', 'hf:acme/tiny/tiny-chat.gguf', '--name', 'tiny.gguf', '--url', 'http://127.0.0.1:9', '--json'], env);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ id: 'tiny', verifiedAgainst: 'server', sha256: sha256(model), alreadyPresent: false });
    expect(hub.log.some((e) => e.path === '/acme/tiny/resolve/main/tiny-chat.gguf')).toBe(true);

    // Plain URLs without HF_ENDPOINT (node-llama-cpp reads every URL of that host as a Hugging Face one).
    const plain = { MODELS_DIR: modelsDir, LOG_LEVEL: 'error' };
    const wrong = await runCli(['model', 'pull', `${hub.url}/files/tiny-chat.gguf`, '--name', 'wrong.gguf', '--sha256', '0'.repeat(64), '--url', 'http://127.0.0.1:9'], plain);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain(`checksum mismatch for wrong.gguf: expected ${'0'.repeat(64)} (--sha256), got ${sha256(model)} (${model.length} bytes, the server announced ${model.length}); the file was deleted`);
    const page = await runCli(['model', 'pull', `${hub.url}/files/page.gguf`, '--url', 'http://127.0.0.1:9'], plain);
    expect(page.code).toBe(1);
    expect(page.stderr).toContain('is not a GGUF file');
    const missing = await runCli(['model', 'pull', `${hub.url}/files/nothing.gguf`, '--url', 'http://127.0.0.1:9'], plain);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`${hub.url}/files/nothing.gguf was not found (404)`);
    const closed = `http://127.0.0.1:${await freePort()}/x.gguf`;
    const refused = await runCli(['model', 'pull', closed, '--url', 'http://127.0.0.1:9'], plain);
    expect(refused.stderr).toContain(`cannot reach ${closed}: ECONNREFUSED`);
    expect(readdirSync(modelsDir).sort()).toEqual(['tiny.gguf']);
    // Nothing configured to save into: said plainly.
    const nowhere = await runCli(['model', 'pull', `${hub.url}/files/tiny-chat.gguf`], { LOG_LEVEL: 'error' });
    expect(nowhere.stderr).toContain('set MODELS_DIR (or pass --dir)');
  });

  describe('with a server running on MODELS_DIR', () => {
    let t: TestApp;
    let modelsDir: string;
    beforeAll(async () => {
      modelsDir = mkdtempSync(join(tmpdir(), 'served-'));
      t = await startTestApp({ MODELS_DIR: modelsDir, MODEL_PATH: BUNDLED_MODEL });
    });
    afterAll(() => t.close());

    it('a pulled model is served at once; model rm unloads and deletes it', async () => {
      // The CLI runs with the server's configuration.
      const env = { MODELS_DIR: modelsDir, MODEL_PATH: BUNDLED_MODEL, LOG_LEVEL: 'error' };
      const target = ['--url', t.url, '--key', t.key];
      expect((await post(t.url, '/v1/completions', t.key, { model: 'tiny-chat', prompt: 'a', max_tokens: 1 })).status).toBe(404);
      const pulled = await runCli(['model', 'pull', `${hub.url}/files/tiny-chat.gguf`, ...target], env);
      expect(pulled.code).toBe(0);
      expect(pulled.stdout).toContain(`the server at ${t.url} lists it now`);
      const r = await post(t.url, '/v1/completions', t.key, { model: 'tiny-chat', prompt: 'Once upon a time', max_tokens: 3, ignore_eos: true });
      expect(r.status).toBe(200);
      expect(r.body.model).toBe('tiny-chat');
      const rm = await runCli(['model', 'rm', 'tiny-chat', ...target], env);
      expect(rm.code).toBe(0);
      expect(rm.stdout).toContain(`Removed tiny-chat (${join(modelsDir, 'tiny-chat.gguf')}); unloaded by the server at ${t.url}`);
      expect(existsSync(join(modelsDir, 'tiny-chat.gguf'))).toBe(false);
      expect((await post(t.url, '/v1/completions', t.key, { model: 'tiny-chat', prompt: 'a', max_tokens: 1 })).status).toBe(404);
      // The default model is not MODELS_DIR's to remove.
      const refused = await runCli(['model', 'rm', 'stories260K', ...target], env);
      expect(refused.stderr).toContain('outside MODELS_DIR');
    });
  });
});
