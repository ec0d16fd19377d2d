import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from './support/cli';
import { freePort, MAIN, startServer, waitForModel } from './support/server-process';

/** A newcomer's first hour (issue 19): logs for people and machines, one .env for server and CLI. */

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const KEY = 'sk-first-hour-0123456789abcdef';

interface Proc {
  readonly child: ChildProcess;
  output(): string;
  readonly exited: Promise<number | null>;
}

/** Spawns `cmd` in its own process group (so that `script` and the server under it stop together). */
function run(cmd: string, args: string[], env: Record<string, string>, cwd: string): Proc {
  const child = spawn(cmd, args, {
    cwd,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function waitFor(proc: Proc, text: string, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (!proc.output().includes(text)) {
    if (Date.now() > until || proc.child.exitCode !== null) throw new Error(`no "${text}" in: ${proc.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stop(proc: Proc): Promise<void> {
  try {
    process.kill(-(proc.child.pid as number), 'SIGTERM');
  } catch {
    /* gone already */
  }
  await proc.exited;
}

const lines = (text: string): string[] => text.split(/\r?\n/).filter((l) => l.trim() !== '');
// eslint-disable-next-line no-control-regex
const plain = (text: string): string => text.replace(/\x1b\[[0-9;]*m/g, '');

describe('logs for people and for machines', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'first-hour-'));
  const base = (port: number): Record<string, string> => ({ PORT: String(port), HOST: '127.0.0.1', THREADS: '1', DATA_DIR: mkdtempSync(join(tmp, 'data-')) });

  it('on a terminal (a pseudo-TTY from util-linux script): pretty lines with ISO times, no route mapping, one summary', async () => {
    execFileSync('script', ['--version']);
    const proc = run('script', ['-qfec', `${process.execPath} ${MAIN}`, '/dev/null'], base(await freePort()), tmp);
    try {
      await waitFor(proc, 'Ready on');
    } finally {
      await stop(proc);
    }
    const out = lines(plain(proc.output())).filter((l) => /\[\d{4}-/.test(l));
    expect(out.length).toBeGreaterThan(2);
    for (const line of out) {
      expect(line.trimStart().startsWith('{')).toBe(false);
      expect(/^\[([^\]]+)\] (INFO|WARN|ERROR|DEBUG|FATAL):/.exec(line)?.[1]).toMatch(ISO);
    }
    expect(proc.output()).not.toContain('Mapped {');
    expect(out.filter((l) => l.includes('Ready on'))).toHaveLength(1);
  });

  it('piped: JSON lines with an ISO time; route mapping and "successfully started" absent at info; one start-up summary', async () => {
    const server = await startServer({});
    try {
      await waitForModel(server);
      await waitFor({ child: server.child, output: server.output, exited: server.exited.then((e) => e.code) }, 'Ready on');
    } finally {
      await server.stop();
    }
    const records = lines(server.output()).map((l) => JSON.parse(l) as { time: string; level: number; msg: string; context?: string; startup?: Record<string, unknown> });
    for (const r of records) expect(r.time).toMatch(ISO);
    expect(records.filter((r) => /Mapped \{|RoutesResolver|RouterExplorer/.test(`${r.msg} ${r.context}`))).toEqual([]);
    expect(server.output()).not.toContain('successfully started');
    const summary = records.filter((r) => r.startup);
    expect(summary).toHaveLength(1);
    expect(summary[0]).toMatchObject({ level: 30, context: 'Bootstrap' });
    expect(summary[0].msg).toMatch(/^Ready on http:\/\/127\.0\.0\.1:\d+: model stories260K \(cpu, engine addon (on|off), 4 slots, 1 threads\); cache memory, keys sqlite/);
    expect(summary[0].startup).toMatchObject({ model: 'stories260K', backend: 'cpu', slots: 4, threads: 1, cache: 'memory', key_store: 'sqlite', tracing: false, docs: true });
  });

  it('a failed start exits non-zero with its error as the last line, and never says it started', async () => {
    const server = await startServer({ MODEL_PATH: join(tmp, 'missing.gguf') });
    const { code } = await server.exited;
    expect(code).toBe(1);
    const out = lines(server.output());
    expect(out[out.length - 1]).toContain(`Fatal: Model file not found: ${join(tmp, 'missing.gguf')}`);
    expect(JSON.parse(out[out.length - 1])).toMatchObject({ level: 60, context: 'Bootstrap' });
    expect(server.output()).not.toMatch(/successfully started|Ready on/);
  });

  it('LOG_LEVEL=debug: key lookup, rate limiter, cache and scheduler decisions for one request (and the key never)', async () => {
    const server = await startServer({ LOG_LEVEL: 'debug', API_KEYS: KEY });
    try {
      await waitForModel(server);
      const before = server.output().length;
      const body = JSON.stringify({ prompt: 'Once upon a time', max_tokens: 4, temperature: 0 });
      const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body });
      expect(res.status).toBe(200);
      await new Promise((r) => setTimeout(r, 200));
      const debug = lines(server.output().slice(before))
        .map((l) => JSON.parse(l) as { level: number; context?: string; msg: string })
        .filter((r) => r.level === 20)
        .map((r) => `${r.context}: ${r.msg}`);
      const expected = [
        /^Auth: key lookup: static key static:[0-9a-f]+$/,
        /^RateLimit: allowed by ip limit \(client 127\.0\.0\.1\): 1\/100 requests in the window/,
        /^RateLimit: allowed by key limit \(key static:[0-9a-f]+\): 1\/600 requests/,
        /^Cache: exact miss$/,
        /^Scheduler: admitted: \d+ prompt tokens, max 4 new/,
        /^Scheduler: slot \d assigned after \d+ ms queued: prefix reuse 0\/\d+ tokens/,
        /^Scheduler: slot \d finished \(length\): \d+ prompt \(0 reused\) \+ 4 completion tokens/,
        /^Cache: store: /,
      ];
      for (const re of expected) expect([re.source, debug.some((l) => re.test(l))]).toEqual([re.source, true]);
      // At debug the framework's lines are there too, as debug.
      expect(server.output()).toContain('Mapped {/v1/completions, POST} route');
      expect(server.output()).not.toContain(KEY);
    } finally {
      await server.stop();
    }
  });
});

describe('one .env for the server and the CLI', () => {
  it('the server and `health` follow PORT from .env in the working directory; --url and the real environment win', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dotenv-'));
    const port = await freePort();
    writeFileSync(join(dir, '.env'), `# a newcomer's settings\nPORT=${port}\nHOST=0.0.0.0\nTHREADS=1\nDATA_DIR=${join(dir, 'data')}\nLOG_LEVEL=warn\n`);
    // No PORT in the environment: the file decides.
    const server = run(process.execPath, [MAIN], {}, dir);
    try {
      const until = Date.now() + 30_000;
      let ok = false;
      while (!ok && Date.now() < until) {
        ok = await fetch(`http://127.0.0.1:${port}/health/ready`).then((r) => r.ok, () => false);
        if (!ok) await new Promise((r) => setTimeout(r, 200));
      }
      expect(ok).toBe(true);

      const cli = (args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string }> => {
        const p = run(process.execPath, [CLI, ...args], env, dir);
        return p.exited.then((code) => ({ code, out: p.output() }));
      };
      const viaFile = await cli(['health']);
      expect(viaFile).toMatchObject({ code: 0 });
      expect(viaFile.out).toContain(`http://127.0.0.1:${port}: healthy`);

      const other = await freePort();
      const viaUrl = await cli(['health', '--url', `http://127.0.0.1:${other}`, '--timeout', '500']);
      expect(viaUrl.code).toBe(1);
      expect(viaUrl.out).toContain(`http://127.0.0.1:${other}: NOT healthy`);

      // A variable in the real environment wins over the file.
      const viaEnv = await cli(['health', '--timeout', '500'], { PORT: String(other) });
      expect(viaEnv.out).toContain(`http://127.0.0.1:${other}: NOT healthy`);

      // --env-file names another file (and is not taken for a command option).
      writeFileSync(join(dir, 'other.env'), `PORT=${other}\n`);
      const viaOption = await cli(['--env-file', 'other.env', 'health', '--timeout', '500']);
      expect(viaOption.out).toContain(`http://127.0.0.1:${other}: NOT healthy`);
      // A named file that is missing stops the command. (Node 20 itself also scans the command line
      // for --env-file, and exits 9 "node: nope.env: not found" before the CLI runs.)
      const missing = await cli(['--env-file', 'nope.env', 'health']);
      expect([2, 9]).toContain(missing.code);
      expect(missing.out).toContain('nope.env');
      const missingByVar = await cli(['health'], { ENV_FILE: 'nope.env' });
      expect(missingByVar.code).toBe(2);
      expect(missingByVar.out.trim()).toBe('Invalid configuration: ENV_FILE names a file that cannot be read (ENOENT) (got "nope.env")');
    } finally {
      await stop(server);
    }
  });
});
