import http from 'node:http';
import { startServer, waitForModel } from './support/server-process';

const KEY = 'sk-test-drain';

interface StreamResult {
  status: number;
  events: string[];
  firstChunk: Promise<void>;
  done: Promise<void>;
}

/** A stream read to its end; `firstChunk` resolves when its first event arrived. */
function stream(url: string, maxTokens: number): StreamResult {
  const result = { status: 0, events: [] as string[] } as StreamResult;
  let first!: () => void;
  result.firstChunk = new Promise<void>((r) => (first = r));
  result.done = new Promise<void>((resolve, reject) => {
    const req = http.request(`${url}/v1/generate/stream`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-API-Key': KEY },
    });
    req.on('response', (res) => {
      result.status = res.statusCode ?? 0;
      let buf = '';
      res.on('data', (d: Buffer) => {
        first();
        buf += d.toString();
        const parts = buf.split('\n\n');
        buf = parts.pop() ?? '';
        result.events.push(...parts.filter((p) => p.startsWith('data: ')));
      });
      res.on('end', resolve);
      res.on('error', reject);
    });
    req.on('error', reject);
    // Sampled, so the response cache never answers it; ignore_eos keeps it going to max_tokens.
    req.end(JSON.stringify({ prompt: 'Once upon a time', max_tokens: maxTokens, ignore_eos: true, temperature: 0.8 }));
  });
  // Marked handled now: the test that cuts streams awaits them only after the exit.
  result.done.catch(() => undefined);
  return result;
}

/** The compiled server receiving SIGTERM, as Kubernetes and `docker stop` send it. */
describe('graceful drain on SIGTERM (server process)', () => {
  it('turns readiness 503, refuses new work with 503 + Retry-After, lets running streams finish, exits 0', async () => {
    // One slot: the second and third streams wait in the queue, which is drained too.
    const server = await startServer({ API_KEYS: KEY, PARALLEL_SLOTS: '1', DRAIN_TIMEOUT_MS: '20000' });
    try {
      await waitForModel(server);
      const streams = [stream(server.url, 480), stream(server.url, 480), stream(server.url, 480)];
      await streams[0].firstChunk;
      server.child.kill('SIGTERM');
      // The signal is handled asynchronously: wait for readiness to flip.
      let ready: Response;
      const until = Date.now() + 5000;
      do ready = await fetch(`${server.url}/health/ready`);
      while (ready.status === 200 && Date.now() < until);
      expect(ready.status).toBe(503);
      const readyBody = (await ready.json()) as { error: { code: string; details: { field: string; message: string }[] } };
      expect(readyBody.error.code).toBe('not_ready');
      expect(readyBody.error.details).toEqual([{ field: 'scheduler', message: 'draining: not admitting new requests' }]);
      expect((await fetch(`${server.url}/health/live`)).status).toBe(200);

      const refused = await fetch(`${server.url}/v1/generate`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-API-Key': KEY },
        body: JSON.stringify({ prompt: 'Hello', max_tokens: 4, temperature: 0.8 }),
      });
      expect(refused.status).toBe(503);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('shutting_down');
      // still generating when the checks above were answered: they ran during the drain
      expect(streams.some((s) => !s.events.at(-1)?.includes('"done":true'))).toBe(true);

      await Promise.all(streams.map((s) => s.done));
      for (const s of streams) {
        expect(s.status).toBe(200);
        const last = JSON.parse(s.events.at(-1)!.slice('data: '.length)) as { done: boolean; usage: { completion_tokens: number } };
        expect(last).toMatchObject({ done: true, finish_reason: 'length' });
        expect(last.usage.completion_tokens).toBe(480);
      }
      expect(await server.exited).toEqual({ code: 0, signal: null });
      expect(server.output()).toContain('SIGTERM: draining (at most 20000 ms)');
    } finally {
      await server.stop();
    }
  });

  it('does not wait beyond DRAIN_TIMEOUT_MS: a stream still running is cut and the process still exits 0', async () => {
    const server = await startServer({ API_KEYS: KEY, PARALLEL_SLOTS: '1', DRAIN_TIMEOUT_MS: '200' });
    try {
      await waitForModel(server);
      const streams = [stream(server.url, 480), stream(server.url, 480), stream(server.url, 480), stream(server.url, 480)];
      await streams[0].firstChunk;
      const signalled = Date.now();
      server.child.kill('SIGTERM');
      const exit = await server.exited;
      expect(exit).toEqual({ code: 0, signal: null });
      expect(Date.now() - signalled).toBeLessThan(5_000);
      expect(server.output()).toContain('drain timeout (200 ms): closing the connections of the requests still running');
      await Promise.all(streams.map((s) => s.done.catch(() => undefined)));
      // The last queued stream could not have finished in 200 ms after the three before it.
      const finished = streams.filter((s) => s.events.at(-1)?.includes('"done":true') && s.events.at(-1)?.includes('"finish_reason":"length"'));
      expect(finished.length).toBeLessThan(streams.length);
    } finally {
      await server.stop();
    }
  });
});
