import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from './support/cli';
import { startServer, waitForModel } from './support/server-process';

/** The server as an operator runs it: the compiled entry point in its own process. */
describe('server process', () => {
  it('a fresh install starts without a key, refuses requests, and serves the key that `keys create` prints', async () => {
    // The cache TTL is short so that the revoke below shows within the test.
    const server = await startServer({ KEY_CACHE_TTL_MS: '250' });
    const generate = (key?: string): Promise<Response> =>
      fetch(`${server.url}/v1/generate`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...(key ? { 'X-API-Key': key } : {}) },
        body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 8 }),
      });
    try {
      await waitForModel(server);
      expect(server.output()).toContain('npm run cli -- keys create --name me');
      expect(existsSync(join(server.dataDir, 'dev-api-key'))).toBe(false);
      expect((await generate()).status).toBe(401);
      expect((await generate('sk-llm-made-up')).status).toBe(401);

      // The README's first step, against the same DATA_DIR, while the server runs.
      const created = await runCli(['keys', 'create', '--name', 'me', '--quiet'], { DATA_DIR: server.dataDir });
      expect(created).toMatchObject({ code: 0, stderr: '' });
      const key = created.stdout.trim();
      expect(key).toMatch(/^sk-llm-[\w-]{32}$/);
      expect(statSync(join(server.dataDir, 'keys.db')).mode & 0o777).toBe(0o600);
      const ok = await generate(key);
      expect(ok.status).toBe(200);
      expect(((await ok.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBeGreaterThan(0);
      const bearer = await fetch(`${server.url}/v1/models`, { headers: { Authorization: `Bearer ${key}` } });
      expect(bearer.status).toBe(200);

      const listed = await runCli(['keys', 'list', '--json'], { DATA_DIR: server.dataDir });
      expect(listed.code).toBe(0);
      expect(listed.stdout).not.toContain(key);
      const [row] = JSON.parse(listed.stdout) as { id: string; name: string; status: string }[];
      expect(row).toMatchObject({ name: 'me', status: 'active' });

      const revoked = await runCli(['keys', 'revoke', 'me'], { DATA_DIR: server.dataDir });
      expect(revoked.code).toBe(0);
      expect(revoked.stdout).toContain(`Revoked: API key ${row.id} "me"`);
      await new Promise((r) => setTimeout(r, 300));
      const refused = await generate(key);
      expect(refused.status).toBe(401);
      expect(await refused.json()).toEqual({
        error: { message: 'This API key has been revoked', type: 'authentication_error', code: 'api_key_revoked' },
      });
      expect(server.output()).not.toContain(key);
    } finally {
      await server.stop();
    }
    expect((await server.exited).code).toBe(0);
  });

  it.each([
    ['PORT', 'abc'],
    ['GPU', 'tpu'],
    ['PARALLEL_SLOTS', '0'],
    ['BODY_LIMIT', '10gb'],
  ])('an invalid %s stops the process with one line naming it and a non-zero exit', async (name, value) => {
    const server = await startServer({ [name]: value });
    const { code } = await server.exited;
    expect(code).not.toBe(0);
    const lines = server.output().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`Invalid configuration: ${name}`);
  });

  it('a missing model file is a clear start-up error and a non-zero exit', async () => {
    const server = await startServer({ MODEL_PATH: '/nonexistent/model.gguf', LOG_LEVEL: 'silent' });
    const { code } = await server.exited;
    expect(code).toBe(1);
    expect(server.output()).toContain('Model file not found: /nonexistent/model.gguf');
  });

  it('a corrupt model file is a clear start-up error and a non-zero exit', async () => {
    const dir = (await import('node:fs')).mkdtempSync(join((await import('node:os')).tmpdir(), 'bad-model-'));
    const path = join(dir, 'broken.gguf');
    writeFileSync(path, Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(4096, 7)]));
    const server = await startServer({ MODEL_PATH: path, LOG_LEVEL: 'silent' });
    const { code } = await server.exited;
    expect(code).toBe(1);
    expect(server.output()).toContain(`Cannot load model ${path}`);
  });

  it('a GPU backend that cannot run falls back to CPU with a warning instead of dying', async () => {
    // No GPU on the CI machine: the CUDA probe fails in its child process.
    const server = await startServer({ GPU: 'cuda', API_KEYS: 'k' });
    try {
      await waitForModel(server, 60_000);
      expect(server.output()).toMatch(/GPU backend \\?"cuda\\?" probe .*falling back to CPU/);
      const res = await fetch(`${server.url}/v1/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: 'Bearer k' },
        body: JSON.stringify({ prompt: 'Once', max_tokens: 4 }),
      });
      expect(res.status).toBe(200);
    } finally {
      await server.stop();
    }
  });
});
