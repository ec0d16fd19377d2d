import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import { chatMaxTokens, runLoad, seededUniform } from './load.generator';

/** A tiny /v1/completions that streams two tokens; `decide` may close the connection instead. */
async function fakeServer(
  decide: (n: number, req: IncomingMessage, res: ServerResponse) => boolean,
  bodies: { max_tokens: number; at: number }[] = [],
): Promise<{ url: string; server: Server; seen: () => number }> {
  let n = 0;
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      bodies.push({ max_tokens: (JSON.parse(body) as { max_tokens: number }).max_tokens, at: performance.now() });
      if (!decide(n++, req, res)) return;
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      for (const text of ['a', 'b']) res.write(`data: ${JSON.stringify({ choices: [{ text }] })}\n\n`);
      res.end('data: [DONE]\n\n');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, seen: () => n };
}

const load = (url: string, requests = 1) => runLoad({ url, concurrency: 1, requests, maxTokens: 2, prompt: () => 'x' });

describe('bench load generator', () => {
  let server: Server | undefined;
  afterEach(async () => {
    if (!server) return;
    server.closeAllConnections();
    await new Promise((r) => server?.close(r));
    server = undefined;
  });

  it('sends a request again on a new connection when the server closed it before answering', async () => {
    // The first request's connection is dropped with no response, as llama-server's closed
    // keep-alive connections look to undici (UND_ERR_SOCKET).
    const fake = await fakeServer((n, req) => (n === 0 ? (req.socket.destroy(), false) : true));
    server = fake.server;
    const r = await load(fake.url);
    expect(r).toMatchObject({ errors: 0, reconnects: 1, tokens: 2 });
    expect(fake.seen()).toBe(2);
  });

  it('gives up after two reconnects and counts the request as an error', async () => {
    const fake = await fakeServer((_n, req) => (req.socket.destroy(), false));
    server = fake.server;
    const r = await load(fake.url);
    expect(r).toMatchObject({ errors: 1, reconnects: 2, tokens: 0 });
    expect(r.errorSamples[0]).toContain('fetch failed');
    expect(fake.seen()).toBe(3);
  });

  it('chat workload: answer lengths spread over max/4 to 2 x max, the same for every server', () => {
    const lengths = Array.from({ length: 64 }, (_, i) => chatMaxTokens(64, i));
    expect(Math.min(...lengths)).toBe(16);
    expect(Math.max(...lengths)).toBeLessThan(128);
    expect(new Set(lengths).size).toBeGreaterThan(40);
    expect(Array.from({ length: 64 }, (_, i) => chatMaxTokens(64, i))).toEqual(lengths);
  });

  it('sends each request its own max_tokens and pauses a client before each request', async () => {
    const bodies: { max_tokens: number; at: number }[] = [];
    const fake = await fakeServer(() => true, bodies);
    server = fake.server;
    const started = performance.now();
    const r = await runLoad({ url: fake.url, concurrency: 1, requests: 4, maxTokens: 2, maxTokensOf: (i) => 10 + i, thinkMs: 40, prompt: () => 'x' });
    expect(r.errors).toBe(0);
    expect(bodies.map((b) => b.max_tokens)).toEqual([10, 11, 12, 13]);
    // Client 0 pauses for the seeded draws of client seed 1, each in [0, 80) ms, before each
    // request. Timers never fire early, so each request arrives at least its pause after the one
    // before (lower bounds only: a loaded CI machine may add any delay on top).
    const draw = seededUniform(1);
    const pauses = Array.from({ length: 4 }, () => draw() * 80);
    const tick = 2; // setTimeout and performance.now() rounding
    expect(bodies[0].at - started).toBeGreaterThanOrEqual(pauses[0] - tick);
    for (let i = 1; i < 4; i++) expect(bodies[i].at - bodies[i - 1].at).toBeGreaterThanOrEqual(pauses[i] - tick);
    expect(pauses.reduce((a, b) => a + b, 0)).toBeGreaterThan(20);
  });

  it('draws the same pauses for every server: a fixed seed per client', () => {
    const a = Array.from({ length: 16 }, seededUniform(3));
    expect(Array.from({ length: 16 }, seededUniform(3))).toEqual(a);
    expect(Array.from({ length: 16 }, seededUniform(4))).not.toEqual(a);
    expect(Math.min(...a)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...a)).toBeLessThan(1);
    expect(new Set(a).size).toBe(16);
  });

  it('does not send again a request the server answered with an error', async () => {
    const fake = await fakeServer((_n, _req, res) => (res.writeHead(500).end('boom'), false));
    server = fake.server;
    const r = await load(fake.url);
    expect(r).toMatchObject({ errors: 1, reconnects: 0 });
    expect(r.errorSamples[0]).toContain('HTTP 500');
    expect(fake.seen()).toBe(1);
  });
});
