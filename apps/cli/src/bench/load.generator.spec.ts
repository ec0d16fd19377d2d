import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import { runLoad } from './load.generator';

/** A tiny /v1/completions that streams two tokens; `decide` may close the connection instead. */
async function fakeServer(decide: (n: number, req: IncomingMessage, res: ServerResponse) => boolean): Promise<{ url: string; server: Server; seen: () => number }> {
  let n = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
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
    server?.closeAllConnections();
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

  it('does not send again a request the server answered with an error', async () => {
    const fake = await fakeServer((_n, _req, res) => (res.writeHead(500).end('boom'), false));
    server = fake.server;
    const r = await load(fake.url);
    expect(r).toMatchObject({ errors: 1, reconnects: 0 });
    expect(r.errorSamples[0]).toContain('HTTP 500');
    expect(fake.seen()).toBe(1);
  });
});
