import express from 'express';
import type { NextFunction, Request, Response } from 'express';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import request from 'supertest';
import { isPlainJson, jsonBody } from './json-body.middleware';

/** An app that echoes the parsed body, or the error type and status the reader produced. */
function app(limit = 1024): express.Express {
  const a = express();
  a.use(jsonBody(limit));
  a.post('/', (req, res) => res.json({ body: req.body as unknown }));
  a.use((err: { type?: string; status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    res.status(err.status ?? 500).json({ type: err.type });
  });
  return a;
}

/** Posts raw bytes (supertest would re-serialise a Buffer as JSON). */
async function postRaw(headers: Record<string, string>, body: Buffer, pieces = 1): Promise<{ status: number; body: unknown }> {
  const server = app().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    return await new Promise((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/', headers: { ...headers, 'Content-Length': body.length } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown }));
      });
      req.on('error', reject);
      // Several writes with pauses: the body reaches the server in separate chunks.
      const size = Math.ceil(body.length / pieces);
      const write = (offset: number): void => {
        if (offset + size >= body.length) return void req.end(body.subarray(offset));
        req.write(body.subarray(offset, offset + size));
        setTimeout(() => write(offset + size), 5);
      };
      write(0);
    });
  } finally {
    server.close();
  }
}

describe('jsonBody', () => {
  it('recognises plain UTF-8 JSON content types only', () => {
    for (const t of ['application/json', 'Application/JSON', 'application/json; charset=utf-8', 'application/json;charset="UTF-8"']) {
      expect(isPlainJson(t)).toBe(true);
    }
    for (const t of [undefined, '', 'text/plain', 'application/json; charset=latin1', 'application/jsonx', 'application/json; foo=bar']) {
      expect(isPlainJson(t)).toBe(false);
    }
  });

  it('parses an ordinary JSON body, multi-byte text and a byte order mark included', async () => {
    const body = { prompt: 'Il était une fois 🐉', max_tokens: 3, nested: [{ a: null }] };
    await request(app()).post('/').set('Content-Type', 'application/json').send(JSON.stringify(body)).expect(200, { body });
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":1}')]);
    expect(await postRaw({ 'Content-Type': 'application/json; charset=utf-8' }, bom)).toEqual({ status: 200, body: { body: { a: 1 } } });
    // Split inside a multi-byte character, too.
    const split = Buffer.from(JSON.stringify(body));
    expect(await postRaw({ 'Content-Type': 'application/json' }, split, 7)).toEqual({ status: 200, body: { body } });
  });

  it('refuses what body-parser refuses, with its error types', async () => {
    await request(app()).post('/').set('Content-Type', 'application/json').send('{"a":').expect(400, { type: 'entity.parse.failed' });
    // Strict: a JSON scalar is not a request body.
    await request(app()).post('/').set('Content-Type', 'application/json').send('"text"').expect(400, { type: 'entity.parse.failed' });
    await request(app())
      .post('/')
      .set('Content-Type', 'application/json')
      .send(JSON.stringify({ text: 'x'.repeat(2000) }))
      .expect(413, { type: 'entity.too.large' });
  });

  it('hands compressed and other-charset bodies to body-parser', async () => {
    const zipped = gzipSync(Buffer.from('{"zipped":true}'));
    expect(await postRaw({ 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' }, zipped)).toEqual({
      status: 200,
      body: { body: { zipped: true } },
    });
    await request(app()).post('/').set('Content-Type', 'application/json; charset=koi8-r').send('{}').expect(415, { type: 'charset.unsupported' });
  });

  it('answers a body shorter than its Content-Length once the client gives up, and keeps serving', async () => {
    const server = app().listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      // The client announces 100 bytes, sends 7 and half-closes: the reader must not hang.
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () => {
          socket.end('POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":1}');
        });
        let data = '';
        socket.on('data', (d: Buffer) => (data += d.toString()));
        socket.on('close', () => resolve(data));
        socket.on('error', reject);
      });
      // Node closes a half-sent request without an answer or with a 400; never a parsed body.
      expect(answer).not.toContain('"body"');
      const res = await request(server).post('/').set('Content-Type', 'application/json').send('{"ok":true}');
      expect(res.body).toEqual({ body: { ok: true } });
    } finally {
      server.close();
    }
  });
});
