import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, normalize, relative } from 'node:path';
import { METRIC } from '../libs/observability/src/metrics.providers';
import { freePort, ROOT } from './support/server-process';

/**
 * Every shell example of the README and docs/ is run here, in document order, as one user's
 * terminal session against a real server (see README, "Development": the markers).
 * Files are read in this order: the README first, since its quick start creates the keys and
 * variables the others use.
 */
const DOC_FILES = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`),
  'models/README.md',
];

/** Files whose unmarked blocks are not run, and why (their owners may mark blocks one by one instead). */
const FILE_SKIPS: Record<string, string> = {
};

type Kind = 'run' | 'server' | 'skip';

interface Expect {
  statuses?: number[];
  json: string[];
  text: string[];
  needs: string[];
}

interface Block {
  file: string;
  line: number;
  code: string;
  kind: Kind;
  reason?: string;
  expect: Expect;
}

const MARKER = /^<!--\s*doc-test:\s*(expect|server|skip)\b(.*?)-->\s*$/;

function parseExpect(args: string): Expect {
  const e: Expect = { json: [], text: [], needs: [] };
  for (const part of args.trim().split(/\s+/).filter(Boolean)) {
    const [key, ...rest] = part.split('=');
    const value = rest.join('=');
    if (key === 'status') e.statuses = value.split(',').map(Number);
    else if (key === 'json') e.json.push(value);
    else if (key === 'text') e.text.push(value);
    else if (key === 'needs') e.needs.push(...value.split(','));
    else throw new Error(`unknown doc-test expectation "${part}"`);
  }
  return e;
}

/** The ```bash / ```sh / ```shell blocks of a Markdown file, with the marker line before each. */
export function extractBlocks(file: string, text: string): Block[] {
  const lines = text.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const fence = /^```(\S*)\s*$/.exec(lines[i]);
    if (!fence) continue;
    let end = i + 1;
    while (end < lines.length && !/^```\s*$/.test(lines[end])) end++;
    if (['bash', 'sh', 'shell'].includes(fence[1])) {
      let j = i - 1;
      while (j >= 0 && lines[j].trim() === '') j--;
      const marker = j >= 0 ? MARKER.exec(lines[j].trim()) : null;
      const base = { file, line: i + 1, code: lines.slice(i + 1, end).join('\n'), expect: parseExpect('') };
      if (marker?.[1] === 'skip') blocks.push({ ...base, kind: 'skip', reason: marker[2].trim() || 'marked skip' });
      else if (marker?.[1] === 'server') blocks.push({ ...base, kind: 'server' });
      else if (FILE_SKIPS[file] && !marker) blocks.push({ ...base, kind: 'skip', reason: FILE_SKIPS[file] });
      else blocks.push({ ...base, kind: 'run', expect: marker ? parseExpect(marker[2]) : base.expect });
    }
    i = end;
  }
  return blocks;
}

/** Every JSON object or array in a text (curl bodies, SSE `data:` lines, CLI --json output). */
export function jsonValues(text: string): unknown[] {
  const values: unknown[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== '{' && text[i] !== '[') continue;
    let depth = 0;
    let inString = false;
    let end = -1;
    for (let j = i; j < text.length && end < 0; j++) {
      const c = text[j];
      if (inString) {
        if (c === '\\') j++;
        else if (c === '"') inString = false;
      } else if (c === '"') inString = true;
      else if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') {
        depth--;
        if (depth === 0) end = j;
      }
    }
    if (end < 0) continue;
    try {
      values.push(JSON.parse(text.slice(i, end + 1)));
      i = end;
    } catch {
      /* not JSON at this brace (e.g. `data: [DONE]`): look further */
    }
  }
  return values;
}

/** `.a.b[0].c` of a value, undefined when any step is missing. */
export function pathValue(value: unknown, path: string): unknown {
  let current: unknown = value;
  for (const m of path.matchAll(/\.([A-Za-z_][\w-]*)|\[(\d+)\]/g)) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<string, unknown>)[m[1] ?? Number(m[2])];
  }
  return current;
}

const BLOCKS = DOC_FILES.flatMap((f) => extractBlocks(f, readFileSync(join(ROOT, f), 'utf8')));
const label = (b: Block): string => `${b.file}:${b.line}`;

describe('documentation examples', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'llm-docs-'));
  const dataDir = join(tmp, 'data');
  const statePath = join(tmp, 'session.sh');
  const createdElsewhere = ['/tmp/qwen.gguf', '/tmp/reranker.gguf'].filter((f) => !existsSync(f));
  const modelsBefore = new Set(readdirSync(join(ROOT, 'models')));
  let port = 0;
  let server: { child: ChildProcess; code: string; output: () => string; exited: Promise<void> } | null = null;
  let baseServerCode: string | null = null;
  let lastFile = '';
  const ran = { run: 0, server: 0, skipped: [] as string[] };

  // What a user's shell has: PATH and HOME, and the same DATA_DIR as the server (the README has
  // the user run the CLI in the server's folder; here the folder's data/ is a temporary one).
  const shellEnv = (): NodeJS.ProcessEnv => ({
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    DATA_DIR: dataDir,
    TERM: 'dumb',
  });
  const substitute = (code: string): string => code.replace(/localhost:8000/g, `127.0.0.1:${port}`);

  beforeAll(async () => {
    mkdirSync(dataDir);
    port = await freePort();
    writeFileSync(statePath, '');
  });

  async function stopServer(): Promise<void> {
    if (!server) return;
    const { child, exited } = server;
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid!, 'SIGTERM');
      } catch {
        /* already gone */
      }
    }
    await exited;
    server = null;
  }

  /** Runs a server block as its user would in a terminal of its own (npm ci excepted), then waits for the model. */
  async function startServer(code: string): Promise<void> {
    await stopServer();
    const script = code
      .split('\n')
      .filter((l) => !/^\s*npm ci\b/.test(l))
      .join('\n');
    const child = spawn('bash', ['-e', '-c', substitute(script)], {
      cwd: ROOT,
      detached: true,
      env: { ...shellEnv(), PORT: String(port), HOST: '127.0.0.1', THREADS: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
    child.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
    // 'close': every process of the block (npm, node) has let go of its output, so none is left running.
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    server = { child, code, output: () => out, exited };
    const until = Date.now() + 90_000;
    while (Date.now() < until) {
      if (child.exitCode !== null) throw new Error(`the server block exited (${child.exitCode}):\n${out}`);
      try {
        const res = await fetch(`http://127.0.0.1:${port}/health`);
        if (res.ok && ((await res.json()) as { model_loaded: boolean }).model_loaded) return;
      } catch {
        /* not listening yet */
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`the server did not load its model in 90 s:\n${out}`);
  }

  function runShell(code: string): Promise<{ code: number | null; stdout: string; stderr: string; statuses: number[] }> {
    // One session: variables exported by a block are there for the next ones, as in a terminal.
    const script = [
      'source "$DOC_TEST_STATE"',
      "trap 'export -p > \"$DOC_TEST_STATE\"' EXIT",
      'set -e -o pipefail',
      // Every HTTP status, on stderr, without touching what the example prints on stdout.
      `curl() { command curl -w '%{stderr}\\n@@doc-test-status=%{http_code}\\n' "$@"; }`,
      substitute(code),
    ].join('\n');
    return new Promise((resolve, reject) => {
      const child = spawn('bash', ['-c', script], {
        cwd: ROOT,
        env: { ...shellEnv(), DOC_TEST_STATE: statePath },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
      child.on('error', reject);
      child.on('close', (exit) => {
        clearTimeout(timer);
        const statuses = [...stderr.matchAll(/@@doc-test-status=(\d+)/g)].map((m) => Number(m[1]));
        resolve({ code: exit, stdout, stderr: stderr.replace(/\n?@@doc-test-status=\d+\n/g, ''), statuses });
      });
    });
  }

  afterAll(async () => {
    await stopServer();
    rmSync(tmp, { recursive: true, force: true });
    for (const f of readdirSync(join(ROOT, 'models'))) if (!modelsBefore.has(f)) rmSync(join(ROOT, 'models', f), { force: true });
    for (const f of createdElsewhere) rmSync(f, { force: true });
    const total = ran.run + ran.server + ran.skipped.length;
    console.log(
      `documentation shell blocks: ${total}; run ${ran.run}, server starts ${ran.server}, not run ${ran.skipped.length}:\n` +
        ran.skipped.map((s) => `  ${s}`).join('\n'),
    );
  });

  it('finds the examples (README quick start first)', () => {
    expect(BLOCKS.filter((b) => b.kind === 'run').length).toBeGreaterThan(30);
    expect(BLOCKS[0]).toMatchObject({ file: 'README.md', kind: 'server' });
    expect(BLOCKS[0].code).toContain('npm start');
  });

  for (const block of BLOCKS) {
    if (block.kind === 'skip') {
      ran.skipped.push(`${label(block)}: ${block.reason}`);
      it.skip(`${label(block)} (not run: ${block.reason})`, () => undefined);
      continue;
    }
    it(`${label(block)} ${block.kind === 'server' ? 'starts the server' : 'runs'}`, async () => {
      // Each file starts on the quick start's server, whatever the file before it started.
      if (block.file !== lastFile) {
        lastFile = block.file;
        if (block.kind !== 'server' && baseServerCode && server?.code !== baseServerCode) await startServer(baseServerCode);
      }
      if (block.kind === 'server') {
        baseServerCode ??= block.code;
        await startServer(block.code);
        ran.server++;
        return;
      }
      const missing = block.expect.needs.filter((cmd) => spawnSync('bash', ['-c', `command -v ${cmd}`]).status !== 0);
      if (missing.length > 0) {
        ran.skipped.push(`${label(block)}: needs ${missing.join(', ')}, not installed here`);
        return;
      }
      ran.run++;
      const result = await runShell(block.code);
      const context = `${label(block)}\n--- block:\n${block.code}\n--- exit ${result.code}, HTTP ${result.statuses.join(',')}\n--- stdout:\n${result.stdout.slice(-4000)}\n--- stderr:\n${result.stderr.slice(-4000)}`;
      if (result.code !== 0) throw new Error(`exit code ${result.code}: ${context}`);
      if (block.expect.statuses) {
        if (result.statuses.join(',') !== block.expect.statuses.join(','))
          throw new Error(`HTTP statuses ${result.statuses.join(',')}, documented ${block.expect.statuses.join(',')}: ${context}`);
      } else {
        const bad = result.statuses.filter((s) => s < 200 || s >= 400);
        if (bad.length > 0) throw new Error(`HTTP status ${bad.join(',')}: ${context}`);
      }
      const values = jsonValues(result.stdout);
      for (const path of block.expect.json) {
        if (!values.some((v) => pathValue(v, path) !== undefined)) throw new Error(`no JSON value with ${path} in the output: ${context}`);
      }
      for (const text of block.expect.text) {
        if (!`${result.stdout}\n${result.stderr}`.includes(text)) throw new Error(`"${text}" not in the output: ${context}`);
      }
    });
  }

  it('documents every metric the server registers (docs/OBSERVABILITY.md)', async () => {
    const doc = readFileSync(join(ROOT, 'docs', 'OBSERVABILITY.md'), 'utf8');
    const documented = (name: string): boolean => doc.includes(`\`${name}\``);
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    const exported = [...(await res.text()).matchAll(/^# HELP ((?:llm|gpu)_\w+)/gm)].map((m) => m[1]);
    expect(exported.length).toBeGreaterThan(30);
    const names = new Set([...exported, ...Object.values(METRIC)]);
    expect([...names].filter((n) => !documented(n))).toEqual([]);
  });

  it('every relative link and #anchor of the docs resolves', () => {
    const slug = (h: string): string =>
      h
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N} _-]/gu, '')
        .replace(/ /g, '-');
    const anchorsOf = (file: string): Set<string> => {
      const found = new Set<string>();
      const seen = new Map<string, number>();
      let fenced = false;
      for (const line of readFileSync(join(ROOT, file), 'utf8').split('\n')) {
        if (line.startsWith('```')) fenced = !fenced;
        const h = fenced ? null : /^#{1,6}\s+(.*)$/.exec(line);
        if (!h) continue;
        const s = slug(h[1]);
        const n = seen.get(s);
        seen.set(s, (n ?? -1) + 1);
        found.add(n === undefined ? s : `${s}-${n + 1}`);
      }
      return found;
    };
    const broken: string[] = [];
    for (const file of DOC_FILES) {
      const text = readFileSync(join(ROOT, file), 'utf8').replace(/```[\s\S]*?```/g, '');
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target)) continue;
        const [path, anchor] = target.split('#');
        const resolved = path === '' ? file : normalize(join(dirname(file), path));
        if (relative(ROOT, join(ROOT, resolved)).startsWith('..') || !existsSync(join(ROOT, resolved))) broken.push(`${file}: ${target}`);
        else if (anchor && resolved.endsWith('.md') && !anchorsOf(resolved).has(anchor)) broken.push(`${file}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });
});
