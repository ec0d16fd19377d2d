import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT, ServerProcess, startServer, waitForModel } from './support/server-process';

const run = promisify(execFile);
const CLI = join(ROOT, 'dist', 'apps', 'cli', 'src', 'main.js');
const KEY = 'sk-cli-cache-test-0123456789';

/** Runs the compiled CLI; MODEL_PATH points nowhere to prove cache commands never load a model. */
async function cli(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', MODEL_PATH: '/nonexistent/model.gguf', API_KEY: KEY },
    });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

describe('npm run cli -- cache stats|flush against a running server', () => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await startServer({ API_KEYS: KEY, SEMANTIC_CACHE_ENABLED: 'true' });
    await waitForModel(server);
  });
  afterAll(() => server?.stop());

  const generate = (prompt: string) =>
    fetch(`${server.url}/v1/generate`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ prompt, max_tokens: 6, temperature: 0 }),
    });

  it('reports the server counters, flushes one layer, then the other', async () => {
    await generate('Once upon a time');
    expect((await generate('Once upon a time')).headers.get('x-cache')).toBe('HIT');

    const stats = await cli(['cache', 'stats', '--json', '--url', server.url]);
    expect(stats.code).toBe(0);
    const report = JSON.parse(stats.stdout);
    expect(report).toMatchObject({ source: 'server', stats: { store: 'memory', exact: { entries: 1, hits: 1, misses: 1 }, semantic: { enabled: true, entries: 1 } } });

    const human = await cli(['cache', 'stats', '--url', server.url]);
    expect(human.stdout).toMatch(/hits \/ misses\s+1 \/ 1 \(hit ratio 50\.0%\)/);

    const flushExact = await cli(['cache', 'flush', '--exact', '--url', server.url]);
    expect(flushExact.stdout).toMatch(/^Flushed via server .*: exact: 1 entries\n$/);
    // The exact entry is gone, the semantic one answers the same prompt (and restores the exact one).
    expect((await generate('Once upon a time')).headers.get('x-cache')).toBe('SEMANTIC-HIT');
    expect((await generate('Once upon a time')).headers.get('x-cache')).toBe('HIT');

    const flushSemantic = JSON.parse((await cli(['cache', 'flush', '--semantic', '--json', '--url', server.url])).stdout);
    expect(flushSemantic).toMatchObject({ source: 'server', flushed: { exact: null, semantic: 1 } });
    const flushAll = JSON.parse((await cli(['cache', 'flush', '--json', '--url', server.url])).stdout);
    expect(flushAll).toMatchObject({ source: 'server', flushed: { exact: 1, semantic: 0 } });
    expect((await generate('Once upon a time')).headers.get('x-cache')).toBe('MISS');
  });

  it('explains what to do when the server is down and there is no Redis', async () => {
    const r = await cli(['cache', 'stats', '--url', 'http://127.0.0.1:9']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/server not reachable at http:\/\/127\.0\.0\.1:9 .*REDIS_URL is not set/);
  });

  it('reports a refused key instead of falling back', async () => {
    const r = await cli(['cache', 'stats', '--url', server.url, '--key', 'sk-wrong']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/answered 401: Invalid API key/);
  });
});
