import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, waitForModel } from './support/server-process';

/** The server as an operator runs it: the compiled entry point in its own process. */
describe('server process', () => {
  it('starts on the bundled model with defaults, generating a dev key that it then requires', async () => {
    const server = await startServer({});
    try {
      await waitForModel(server);
      const keyFile = join(server.dataDir, 'dev-api-key');
      expect(statSync(keyFile).mode & 0o777).toBe(0o600);
      const key = readFileSync(keyFile, 'utf8').trim();
      expect(key).toMatch(/^sk-llm-[\w-]{32}$/);
      expect(server.output()).not.toContain(key);
      const unauth = await fetch(`${server.url}/v1/generate`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ prompt: 'Once upon a time' }),
      });
      expect(unauth.status).toBe(401);
      const res = await fetch(`${server.url}/v1/generate`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-API-Key': key },
        body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 8 }),
      });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBeGreaterThan(0);
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
