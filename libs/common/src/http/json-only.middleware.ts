import type { NextFunction, Request, Response } from 'express';
import { renderError } from '../errors/all-exceptions.filter';
import { CommonErrorCode, CommonException } from '../errors/common.exception';

/**
 * Bodies must be JSON. A form-encoded or text body would otherwise reach validation as an empty
 * object and produce a misleading "prompt must be a string"; a 415 says what is wrong.
 */
export function jsonOnly(req: Request, res: Response, next: NextFunction): void {
  const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
  if (['POST', 'PUT', 'PATCH'].includes(req.method) && hasBody && !req.is('application/json')) {
    const r = renderError(
      new CommonException(
        CommonErrorCode.UnsupportedMediaType,
        `Content-Type must be application/json (got ${JSON.stringify(req.headers['content-type'] ?? '')})`,
      ),
    );
    res.status(r.status).json(r.body);
    return;
  }
  next();
}

/** Express error middleware: body-parser failures become the envelope too. */
export function bodyParserErrors(err: unknown, _req: Request, res: Response, next: NextFunction): void {
  if (res.headersSent) return next(err);
  const r = renderError(err);
  res.status(r.status).set(r.headers).json(r.body);
}
