import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { CommonErrorCode, CommonException } from '../errors/common.exception';
import { sendEarlyRejection } from './json-only.middleware';

/**
 * Bounds the time a client may take to send a request body, once its headers arrived. Without it a
 * client that announces a large Content-Length and then sends nothing holds its connection and
 * request until Node's own request timeout (300 s), a cheap way to tie up a server. Past `ms` the
 * client gets a 408 envelope and the connection is closed (the rest of the body is not wanted).
 */
export function bodyDeadline(ms: number): RequestHandler {
  return (req: Request, res: Response, next: NextFunction): void => {
    const announced = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
    if (!announced || req.complete) return next();
    const timer = setTimeout(() => {
      if (req.complete) return;
      if (!res.headersSent) {
        res.setHeader('Connection', 'close');
        res.once('finish', () => req.socket.destroy());
        sendEarlyRejection(req, res, new CommonException(CommonErrorCode.RequestTimeout, `The request body did not arrive within ${ms} ms`));
      } else {
        req.socket.destroy();
      }
    }, ms);
    timer.unref();
    const clear = (): void => clearTimeout(timer);
    req.once('end', clear);
    res.once('finish', clear);
    res.once('close', clear);
    next();
  };
}
