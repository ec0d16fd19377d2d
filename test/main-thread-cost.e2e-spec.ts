import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startTestApp, TestApp } from './support/test-app';

const run = promisify(execFile);

/**
 * scripts/main-thread-cost.mjs against the real server: it streams from it and divides the
 * growth of the server's llm_event_loop_cpu_seconds_total by the tokens it received. The app runs
 * in this process, so the script runs as a child (asynchronously: a blocking call would stop the
 * server it measures).
 */
describe('scripts/main-thread-cost.mjs', () => {
  let app: TestApp;
  beforeAll(async () => (app = await startTestApp()));
  afterAll(async () => app.close());

  const onLinux = process.platform === 'linux' ? it : it.skip;

  onLinux('streams from the server and reports its main thread CPU a token', async () => {
    const port = new URL(app.url).port;
    const { stdout } = await run(process.execPath, ['scripts/main-thread-cost.mjs', '--port', port, '--seconds', '1', '--max-tokens', '16', '--api-key', app.key], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    const m = /port (\d+): (\d+) requests, (\d+) tokens in [\d.]+ s \(\d+ tok\/s\); main thread [\d.]+ ms of CPU a second, (\d+) µs a token/.exec(stdout);
    expect(m).not.toBeNull();
    const [, reportedPort, requests, tokens, perToken] = m as RegExpExecArray;
    expect(reportedPort).toBe(port);
    // Every request streams 16 tokens (ignore_eos), one frame each, which the script counts; a
    // token that ends inside a UTF-8 character goes out with the next one's frame (the bundled
    // model has byte tokens: ~2 in 6,000 at temperature 0.8), hence a little under 16 at most.
    expect(Number(requests)).toBeGreaterThan(0);
    expect(Number(tokens)).toBeLessThanOrEqual(16 * Number(requests));
    expect(Number(tokens)).toBeGreaterThanOrEqual(15 * Number(requests));
    expect(Number(perToken)).toBeGreaterThan(0);
  });

  it('says so when nothing answers on the port', async () => {
    await expect(run(process.execPath, ['scripts/main-thread-cost.mjs', '--port', '1'], { encoding: 'utf8' })).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringContaining('nothing answers on port 1'),
    });
  });
});
