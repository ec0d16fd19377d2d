import { runCli } from './support/cli';
import { freePort, startServer, waitForModel } from './support/server-process';

/** `health`: the running server's probes, as deploy scripts call it. */
describe('admin CLI: health', () => {
  it('exits 0 when every probe passes, with a human table or --json', async () => {
    const server = await startServer({ API_KEYS: 'cli-health-key' });
    try {
      await waitForModel(server);
      const human = await runCli(['health', '--url', server.url], {});
      expect(human.code).toBe(0);
      expect(human.stdout).toContain(`${server.url}: healthy`);
      expect(human.stdout).toMatch(/live +ok +200/);
      expect(human.stdout).toMatch(/ready +ok +200/);
      expect(human.stdout).toMatch(/startup +ok +200/);

      const json = await runCli(['health', '--url', server.url, '--json', '--probe', 'ready'], {});
      expect(json.code).toBe(0);
      const report = JSON.parse(json.stdout) as { ok: boolean; probes: { probe: string; ok: boolean; status: number; info: { scheduler: { status: string } } }[] };
      expect(report.ok).toBe(true);
      expect(report.probes).toHaveLength(1);
      expect(report.probes[0]).toMatchObject({ probe: 'ready', ok: true, status: 200, info: { scheduler: { status: 'up' } } });
    } finally {
      await server.stop();
    }
  });

  it('exits 1 when a probe fails (readiness with its Redis down) and names the failed check', async () => {
    const deadRedis = await freePort();
    const server = await startServer({ API_KEYS: 'cli-health-key', REDIS_URL: `redis://127.0.0.1:${deadRedis}`, LOG_LEVEL: 'silent' });
    try {
      await waitForModel(server);
      const res = await runCli(['health', '--url', server.url, '--json'], {});
      expect(res.code).toBe(1);
      const report = JSON.parse(res.stdout) as { ok: boolean; probes: { probe: string; ok: boolean; status: number; error?: string }[] };
      expect(report.ok).toBe(false);
      const byName = Object.fromEntries(report.probes.map((p) => [p.probe, p]));
      expect(byName.live).toMatchObject({ ok: true, status: 200 });
      expect(byName.startup).toMatchObject({ ok: true, status: 200 });
      expect(byName.ready).toMatchObject({ ok: false, status: 503 });
      expect(byName.ready.error).toMatch(/^Not ready: redis/);
      // only the probes asked for decide the exit code
      expect((await runCli(['health', '--url', server.url, '--probe', 'live,startup'], {})).code).toBe(0);
    } finally {
      await server.stop();
    }
  });

  it('exits 1 when the server is unreachable, 2 on a bad option value, and --wait waits for a starting server', async () => {
    const port = await freePort();
    const down = await runCli(['health', '--url', `http://127.0.0.1:${port}`], {});
    expect(down.code).toBe(1);
    expect(down.stdout).toMatch(/live +FAIL +--- .*unreachable \(ECONNREFUSED\)/);
    for (const args of [['--probe', 'bogus'], ['--wait', '-1']]) {
      const bad = await runCli(['health', ...args], {});
      expect([args, bad.code]).toEqual([args, 2]);
      expect(bad.stderr).toContain('is invalid');
    }

    const server = await startServer({ API_KEYS: 'cli-health-key' });
    try {
      // started a moment ago: not listening or loading; --wait polls until startup and readiness pass
      const res = await runCli(['health', '--url', server.url, '--probe', 'startup,ready', '--wait', '30', '--json'], {});
      expect(res.code).toBe(0);
      expect((JSON.parse(res.stdout) as { ok: boolean }).ok).toBe(true);
    } finally {
      await server.stop();
    }
  });
});
