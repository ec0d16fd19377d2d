import type { Response } from 'express';
import { renderError, renderErrorFor, RenderedError } from '../errors/all-exceptions.filter';

/** Options for {@link writeSse}. */
export interface SseOptions<T> {
  /** Serialises one item to the `data:` payload. */
  encode(item: T): string;
  /** The item's SSE `event:` name, if it has one. */
  eventName?(item: T): string | undefined;
  /** Sent after the last item (e.g. `[DONE]` for OpenAI clients). Default: nothing. */
  terminator?: string;
  /** Extra response headers, e.g. X-Cache. */
  headers?: Record<string, string>;
  /**
   * The event that reports an error once the stream has started (the wire format's own error
   * event). Default: `data: <the error body>`, in the route's error format.
   */
  errorEvent?(error: RenderedError): { event?: string; data: unknown };
}

/**
 * Streams an async iterable as Server-Sent Events. The first item is awaited before any header
 * is written, so an error raised before generation starts (validation, full queue, context too
 * long) still leaves as a normal JSON error with its HTTP status. Later errors are reported
 * in-band as an `{"error": ...}` event, since the 200 head has gone.
 */
export async function writeSse<T>(res: Response, items: AsyncIterable<T>, options: SseOptions<T>): Promise<void> {
  const iterator = items[Symbol.asyncIterator]();
  let next = await iterator.next(); // throws before the head: the global filter renders it
  res.status(200).set({
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache, no-transform',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no',
    ...options.headers,
  });
  res.socket?.setNoDelay(true);
  // The head leaves with the first frame, in one write (flushHeaders() would send it alone: one
  // more syscall and one more wake-up of the client a request); later frames go pre-framed.
  let write = (frame: string): void => {
    res.write(frame);
    write = frameWriter(res);
  };
  try {
    while (!next.done) {
      if (res.writableEnded || res.destroyed) break;
      const name = options.eventName?.(next.value);
      write(`${name ? `event: ${name}\n` : ''}data: ${options.encode(next.value)}\n\n`);
      next = await iterator.next();
    }
    if (!res.destroyed && options.terminator !== undefined) write(`data: ${options.terminator}\n\n`);
  } catch (err) {
    if (!res.destroyed) {
      const custom = options.errorEvent?.(renderError(err));
      const frame = custom ?? { data: renderErrorFor(res.req?.originalUrl, err).body };
      write(`${frame.event ? `event: ${frame.event}\n` : ''}data: ${JSON.stringify(frame.data)}\n\n`);
    }
  } finally {
    if (!next.done) await iterator.return?.();
    if (!res.writableEnded) res.end();
  }
}

/**
 * How the stream's frames are written. `res.write` on a chunked response corks the socket, sends
 * the chunk's size line, the data and a CRLF as separate writes and uncorks on the next tick (a
 * 4-buffer `writev`); that JavaScript is a good part of Node's work per streamed token, and on a
 * 2-core CPU the main thread's time is taken from the decode. Once the head is out, a chunked
 * HTTP/1.1 response gets each frame as one pre-framed chunk written to the socket in one call
 * (the same bytes; `res.end()` still writes the last, empty chunk). Anything else (HTTP/1.0, no
 * chunked encoding, a head not flushed) keeps `res.write`.
 */
function frameWriter(res: Response): (frame: string) => void {
  const socket = res.socket;
  if (!res.headersSent || !res.chunkedEncoding || !socket || typeof socket.write !== 'function') return (frame) => void res.write(frame);
  return (frame) => {
    if (res.destroyed || socket.destroyed) return;
    socket.write(`${Buffer.byteLength(frame).toString(16)}\r\n${frame}\r\n`);
  };
}

/**
 * An AbortSignal that fires when the client goes away before the response finished, so that
 * generation stops and its slot is freed at once.
 */
export function clientAbortSignal(res: Response): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort(new Error('client disconnected'));
  });
  return controller.signal;
}
