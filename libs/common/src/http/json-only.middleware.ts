import type { NextFunction, Request, Response } from 'express';
import { Logger } from '@nestjs/common';
import { renderError, sendError } from '../errors/all-exceptions.filter';
import { redactUrl } from './url.redaction';
import { CommonErrorCode, CommonException } from '../errors/common.exception';
import { isPlainJson } from './json-body.middleware';

const logger = new Logger('Http');

/**
 * Answers a request turned away before routing (body parsing, Content-Type, nesting, body
 * deadline, schema limits) in its route's error shape, and logs it: these answers leave before the
 * request logger has seen the request, so without this line a client's 400/408/413/415 would leave
 * no trace in the logs.
 */
export function sendEarlyRejection(req: Request, res: Response, exception: unknown): void {
  const { status, body } = renderError(exception);
  logger.warn(
    {
      method: req.method,
      url: redactUrl(req.originalUrl ?? req.url),
      status,
      code: body.error.code,
      // body-parser's kind of failure, never its message (a JSON parse error quotes the body).
      ...(typeof (exception as { type?: unknown } | null)?.type === 'string' ? { reason: (exception as { type: string }).type } : {}),
    },
    `request refused before routing: ${status} ${body.error.code}`,
  );
  sendError(req, res, exception);
}

/**
 * Bodies must be JSON. A form-encoded or text body would otherwise reach validation as an empty
 * object and produce a misleading "prompt must be a string"; a 415 says what is wrong.
 */
export function jsonOnly(req: Request, res: Response, next: NextFunction): void {
  if (isPlainJson(req.headers['content-type'])) return next();
  const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
  if (['POST', 'PUT', 'PATCH', 'DELETE'].includes(req.method) && hasBody && !req.is('application/json')) {
    sendEarlyRejection(
      req,
      res,
      new CommonException(
        CommonErrorCode.UnsupportedMediaType,
        `Content-Type must be application/json (got ${JSON.stringify(req.headers['content-type'] ?? '')})`,
      ),
    );
    return;
  }
  next();
}

/** Express error middleware: body-parser failures become the envelope too, and are logged. */
export function bodyParserErrors(err: unknown, req: Request, res: Response, next: NextFunction): void {
  if (res.headersSent) return next(err);
  sendEarlyRejection(req, res, err);
}

/**
 * Deepest JSON nesting a body may have. The deepest legitimate request (a chat `json_schema`
 * response format) stays well under it.
 */
export const MAX_JSON_DEPTH = 64;

/** Nesting depth of a parsed JSON value, measured without recursion; stops past `limit`. */
export function jsonDepth(value: unknown, limit = MAX_JSON_DEPTH): number {
  if (value === null || typeof value !== 'object') return 0;
  let deepest = 0;
  // Containers only (scalars cannot be deeper): a body of 70,000 enum strings costs no allocation per string.
  const objects: object[] = [value];
  const depths: number[] = [1];
  while (objects.length > 0) {
    const v = objects.pop() as Record<string, unknown>;
    const depth = depths.pop() as number;
    if (depth > deepest) deepest = depth;
    if (deepest > limit) return deepest;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const child: unknown = v[i];
        if (child !== null && typeof child === 'object') {
          objects.push(child);
          depths.push(depth + 1);
        }
      }
    } else {
      for (const key in v) {
        const child = v[key];
        if (child !== null && typeof child === 'object' && Object.prototype.hasOwnProperty.call(v, key)) {
          objects.push(child);
          depths.push(depth + 1);
        }
      }
    }
  }
  return deepest;
}

/**
 * JSON.parse handles any depth, but the validation pipe (and class-transformer) recurse: a body of
 * a few thousand nested arrays, well under BODY_LIMIT, overflowed the stack and became a 500.
 * Refused here with a 400 before any recursive code sees it.
 */
export function jsonDepthLimit(req: Request, res: Response, next: NextFunction): void {
  if (req.body !== null && typeof req.body === 'object' && jsonDepth(req.body) > MAX_JSON_DEPTH) {
    sendEarlyRejection(req, res, new CommonException(CommonErrorCode.NestingTooDeep, `Request body is nested deeper than ${MAX_JSON_DEPTH} levels`));
    return;
  }
  next();
}
