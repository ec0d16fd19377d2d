import express from 'express';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { writeSse } from './sse.writer';

async function* items(values: readonly string[], failAfter?: number): AsyncGenerator<string> {
  for (const [i, v] of values.entries()) {
    if (failAfter !== undefined && i === failAfter) throw new Error('boom');
    yield v;
  }
}

/** A server whose one route streams `values` (and fails after `failAfter` items, when set). */
async function serve(values: readonly string[], failAfter?: number): Promise<{ port: number; close(): Promise<void> }> {
  const app = express();
  app.get('/s', (_req, res) => void writeSse(res, items(values, failAfter), { encode: (v) => JSON.stringify({ text: v }), terminator: '[DONE]' }));
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/**
 * The raw response (head and body as sent) of a GET over HTTP/1.x: until the connection ends
 * (HTTP/1.0) or the last chunk has come (HTTP/1.1: an event stream asks to keep the connection).
 */
function raw(port: number, version: '1.0' | '1.1'): Promise<{ head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(`GET /s HTTP/${version}\r\nHost: x\r\n\r\n`));
    const chunks: Buffer[] = [];
    const done = (): void => {
      socket.destroy();
      const text = Buffer.concat(chunks).toString('utf8');
      const at = text.indexOf('\r\n\r\n');
      resolve({ head: text.slice(0, at), body: text.slice(at + 4) });
    };
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      if (version === '1.1' && Buffer.concat(chunks).toString('latin1').endsWith('\r\n0\r\n\r\n')) done();
    });
    socket.on('error', reject);
    socket.on('end', done);
  });
}

/** Decodes a chunked body, checking every chunk's size line against its bytes. */
function dechunk(body: string): { frames: string[]; last: boolean } {
  const bytes = Buffer.from(body, 'utf8');
  const frames: string[] = [];
  let at = 0;
  for (;;) {
    const eol = bytes.indexOf('\r\n', at);
    const size = parseInt(bytes.subarray(at, eol).toString('latin1'), 16);
    if (size === 0) return { frames, last: bytes.subarray(eol, eol + 4).toString('latin1') === '\r\n\r\n' };
    frames.push(bytes.subarray(eol + 2, eol + 2 + size).toString('utf8'));
    expect(bytes.subarray(eol + 2 + size, eol + 4 + size).toString('latin1')).toBe('\r\n');
    at = eol + 4 + size;
  }
}

describe('writeSse', () => {
  const values = ['Once', ' upon a time', ' é, 🙂 and 中文'];
  const expected = [...values.map((v) => `data: ${JSON.stringify({ text: v })}\n\n`), 'data: [DONE]\n\n'];

  it('sends each frame as one well-formed chunk over HTTP/1.1 (sizes in bytes, multi-byte text included), then the last chunk', async () => {
    const server = await serve(values);
    try {
      const { head, body } = await raw(server.port, '1.1');
      expect(head).toMatch(/^HTTP\/1\.1 200/);
      expect(head).toMatch(/transfer-encoding: chunked/i);
      expect(head).toMatch(/content-type: text\/event-stream/i);
      const { frames, last } = dechunk(body);
      expect(frames.join('')).toBe(expected.join(''));
      expect(last).toBe(true);
    } finally {
      await server.close();
    }
  });

  it('writes the same frames unframed to an HTTP/1.0 client (no chunked encoding there)', async () => {
    const server = await serve(values);
    try {
      const { head, body } = await raw(server.port, '1.0');
      expect(head).not.toMatch(/transfer-encoding/i);
      expect(body).toBe(expected.join(''));
    } finally {
      await server.close();
    }
  });

  it('reads the same through fetch, and reports a later error in-band as its last frame', async () => {
    const ok = await serve(values);
    const failing = await serve(values, 2);
    try {
      expect(await (await fetch(`http://127.0.0.1:${ok.port}/s`)).text()).toBe(expected.join(''));
      const text = await (await fetch(`http://127.0.0.1:${failing.port}/s`)).text();
      expect(text.startsWith(expected.slice(0, 2).join(''))).toBe(true);
      expect(text.slice(expected.slice(0, 2).join('').length)).toMatch(/^data: \{"error":\{.*\}\}\n\n$/);
    } finally {
      await ok.close();
      await failing.close();
    }
  });
});
