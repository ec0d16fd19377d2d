import { json } from 'express';
import type { NextFunction, Request, RequestHandler, Response } from 'express';

/** `application/json`, optionally with `charset=utf-8`: what every API client sends. */
const PLAIN_JSON = /^application\/json\s*(?:;\s*charset\s*=\s*(?:utf-8|"utf-8")\s*)?$/i;
/** JSON whitespace, then the first character (strict JSON bodies are objects or arrays). */
const FIRST_CHAR = /^[\x20\x09\x0a\x0d]*([^\x20\x09\x0a\x0d])/;

/** The JSON text each body read here was parsed from (kept as long as the body object lives). */
const SOURCE_TEXT = new WeakMap<object, string>();

/**
 * The exact JSON text `body` was parsed from, when the direct reader parsed it (undefined for
 * bodies body-parser handled): equal texts give equal bodies, which lets pure work done on a body
 * (validation) be remembered by its text.
 */
export function jsonSourceOf(body: unknown): string | undefined {
  return body !== null && typeof body === 'object' ? SOURCE_TEXT.get(body) : undefined;
}

/** Whether the Content-Type is plain UTF-8 JSON (cheaper than type-is, which parses the header). */
export function isPlainJson(contentType: string | undefined): boolean {
  return contentType !== undefined && PLAIN_JSON.test(contentType);
}

/** An error marked the way body-parser marks its own, so the one renderer maps both alike. */
function parserError(type: string, message: string, status: number): Error {
  return Object.assign(new Error(message), { type, status, statusCode: status, expose: true });
}

/**
 * Express's JSON body parser (strict, `limit` bytes) with a direct path for the request every
 * client sends: UTF-8 `application/json`, a Content-Length within the limit, no content coding.
 * That body is read with three listeners and parsed with one JSON.parse, instead of going through
 * raw-body, iconv and two Content-Type parses: on a small request (a cache hit) body-parser's
 * machinery cost about as much as the answer. Anything else (compressed, chunked, other charsets,
 * over the limit) goes to body-parser, which answers it as before. Failures carry body-parser's
 * error types (`entity.parse.failed`, `request.size.invalid`, `request.aborted`).
 */
export function jsonBody(limit: number): RequestHandler {
  const general = json({ limit, strict: true });
  return (req: Request, res: Response, next: NextFunction): void => {
    const headers = req.headers;
    const length = Number(headers['content-length']);
    const coding = headers['content-encoding'];
    if (
      req.complete ||
      !(Number.isSafeInteger(length) && length > 0 && length <= limit) ||
      headers['transfer-encoding'] !== undefined ||
      (coding !== undefined && coding.toLowerCase() !== 'identity') ||
      !isPlainJson(headers['content-type'])
    ) {
      general(req, res, next);
      return;
    }
    const chunks: Buffer[] = [];
    let received = 0;
    let settled = false;
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onAbort);
      req.off('close', onAbort);
      if (err) {
        // Whatever is still coming is not wanted; read it away so the connection stays usable.
        req.resume();
        next(err);
        return;
      }
      next();
    };
    const onData = (chunk: Buffer): void => {
      received += chunk.length;
      if (received > length) finish(parserError('request.size.invalid', 'request size did not match content length', 400));
      else chunks.push(chunk);
    };
    const onEnd = (): void => {
      if (received !== length) return finish(parserError('request.size.invalid', 'request size did not match content length', 400));
      let text = (chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, received)).toString('utf8');
      // A UTF-8 byte order mark is dropped, as body-parser's decoder does.
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      const first = FIRST_CHAR.exec(text)?.[1];
      if (first !== '{' && first !== '[') return finish(parserError('entity.parse.failed', 'Unexpected token: strict JSON bodies are objects or arrays', 400));
      try {
        const body: unknown = JSON.parse(text);
        SOURCE_TEXT.set(body as object, text);
        req.body = body;
      } catch (err) {
        return finish(parserError('entity.parse.failed', (err as Error).message, 400));
      }
      finish();
    };
    const onAbort = (): void => finish(parserError('request.aborted', 'request aborted', 400));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onAbort);
    req.on('close', onAbort);
  };
}
