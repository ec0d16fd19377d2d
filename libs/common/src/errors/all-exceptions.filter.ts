import { ArgumentsHost, Catch, ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import type { Request, Response } from 'express';
import { ApiError, ErrorEnvelope, ErrorType } from './api-error';
import { CommonErrorCode, CommonException } from './common.exception';
import { redactSecrets, redactUrl } from '../http/url.redaction';

/** body-parser marks its errors with a `type`; these are the ones a client can cause. */
const BODY_PARSER_ERRORS: Record<string, () => CommonException> = {
  'entity.parse.failed': () =>
    new CommonException(CommonErrorCode.MalformedJson, 'Request body is not valid JSON'),
  'entity.too.large': () =>
    new CommonException(CommonErrorCode.PayloadTooLarge, 'Request body exceeds the size limit'),
  'entity.verify.failed': () =>
    new CommonException(CommonErrorCode.MalformedJson, 'Request body failed verification'),
  'charset.unsupported': () =>
    new CommonException(CommonErrorCode.UnsupportedMediaType, 'Unsupported charset; send UTF-8 JSON'),
  'encoding.unsupported': () =>
    new CommonException(CommonErrorCode.UnsupportedMediaType, 'Unsupported content encoding'),
  'request.aborted': () => new CommonException(CommonErrorCode.MalformedJson, 'Request body was aborted'),
  'request.size.invalid': () =>
    new CommonException(CommonErrorCode.MalformedJson, 'Request body size does not match Content-Length'),
  'stream.encoding.set': () => new CommonException(CommonErrorCode.Internal, 'Internal server error'),
};

const TYPE_BY_STATUS: Record<number, ErrorType> = {
  401: ErrorType.Authentication,
  403: ErrorType.Permission,
  404: ErrorType.NotFound,
  429: ErrorType.RateLimit,
  503: ErrorType.Unavailable,
};

/**
 * A zlib or brotli failure while body-parser inflated a `Content-Encoding: gzip|deflate|br` body:
 * the client sent a corrupt or truncated stream (body-parser passes these on untyped).
 */
function isDecompressionError(exception: unknown): boolean {
  const code = (exception as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^(Z_[A-Z_]+|ERR__ERROR_[A-Z0-9_]+|ERR_BROTLI_[A-Z_]+)$/.test(code);
}

export interface RenderedError {
  status: number;
  headers: Record<string, string>;
  body: ErrorEnvelope;
}

/**
 * Turns a library's transport-free error (a code and data) into an ApiError, or says it is not
 * one of its own (undefined). The API registers one per library whose errors carry no HTTP
 * mapping themselves (the scheduler's), so that status codes and headers are chosen in one place.
 */
export type ErrorTranslator = (exception: unknown) => ApiError | undefined;
const translators: ErrorTranslator[] = [];

/** Adds a translator for renderError (idempotent for the same function). */
export function registerErrorTranslator(translator: ErrorTranslator): void {
  if (!translators.includes(translator)) translators.push(translator);
}

/** The ApiError a registered translator makes of `exception`, or `exception` itself. */
export function translateError(exception: unknown): unknown {
  if (exception instanceof ApiError) return exception;
  for (const translate of translators) {
    const translated = translate(exception);
    if (translated) return translated;
  }
  return exception;
}

/**
 * Turns anything thrown into the one error envelope. Exported so that places outside Nest's
 * filter chain (express error middleware, SSE streams already under way) render identically.
 */
export function renderError(exception: unknown): RenderedError {
  if (exception instanceof ApiError) {
    const body = exception.toEnvelope();
    // Messages may quote client input (a model name, a collection name): never echo a key.
    body.error.message = redactSecrets(body.error.message);
    return { status: exception.status, headers: exception.headers, body };
  }
  const translated = translateError(exception);
  if (translated !== exception) return renderError(translated);
  const parserType = (exception as { type?: unknown } | null)?.type;
  if (typeof parserType === 'string' && BODY_PARSER_ERRORS[parserType]) {
    return renderError(BODY_PARSER_ERRORS[parserType]());
  }
  if (isDecompressionError(exception)) {
    return renderError(
      new CommonException(
        CommonErrorCode.InvalidBodyEncoding,
        'Request body could not be decompressed: it does not match its Content-Encoding (gzip, deflate or br)',
      ),
    );
  }
  if (exception instanceof HttpException) {
    const status = exception.getStatus();
    if (status === 404) {
      return renderError(new CommonException(CommonErrorCode.RouteNotFound, exception.message));
    }
    if (status === 413) {
      return renderError(new CommonException(CommonErrorCode.PayloadTooLarge, 'Request body exceeds the size limit'));
    }
    const type = TYPE_BY_STATUS[status] ?? (status >= 500 ? ErrorType.Server : ErrorType.InvalidRequest);
    const message = status >= 500 ? 'Internal server error' : redactSecrets(exception.message);
    return { status, headers: {}, body: { error: { message, type, code: `http_${status}` } } };
  }
  return renderError(new CommonException(CommonErrorCode.Internal, 'Internal server error'));
}

/**
 * Another wire format's error shape for some routes (Anthropic's Messages API answers
 * `{"type":"error","error":{...}}`): the error is rendered as usual (status, headers, envelope),
 * then reshaped. Registered by the API at start-up, like the translators.
 */
export interface ErrorFormat {
  /** Whether a request to this path (no query string) gets this format. */
  matches(path: string): boolean;
  /** The body to send instead of the envelope (the status may change too). */
  reshape(rendered: RenderedError, requestId: string | undefined): { status: number; body: unknown };
}
const formats: ErrorFormat[] = [];

/** Adds an error format (idempotent for the same object). */
export function registerErrorFormat(format: ErrorFormat): void {
  if (!formats.includes(format)) formats.push(format);
}

/** The format registered for `path` (its query string ignored), if any. */
export function errorFormatFor(path: string | undefined): ErrorFormat | undefined {
  if (path === undefined || formats.length === 0) return undefined;
  const bare = path.split('?')[0];
  return formats.find((f) => f.matches(bare));
}

/** What goes on the wire for `exception` on a request to `path`: the envelope, or the route's own shape. */
export function renderErrorFor(path: string | undefined, exception: unknown, requestId?: string): { status: number; headers: Record<string, string>; body: unknown } {
  const rendered = renderError(exception);
  const format = errorFormatFor(path);
  if (!format) return rendered;
  return { headers: rendered.headers, ...format.reshape(rendered, requestId) };
}

/** Sends an error from an express middleware (before routing) in the route's format. */
export function sendError(req: Request, res: Response, exception: unknown): void {
  const r = renderErrorFor(req.originalUrl, exception);
  res.status(r.status).set(r.headers).json(r.body);
}

/** The single global filter: every error leaves the server as `{"error": {...}}` (or its route's format). */
@Catch()
export class AllExceptionsFilter implements ExceptionFilter {
  readonly #logger = new Logger('Errors');

  catch(thrown: unknown, host: ArgumentsHost): void {
    const exception = translateError(thrown);
    const ctx = host.switchToHttp();
    const res = ctx.getResponse<Response>();
    const req = ctx.getRequest<Request & { id?: unknown }>();
    const rendered = renderError(exception);
    const requestId = req?.id === undefined ? undefined : String(req.id);
    const format = errorFormatFor(req?.originalUrl);
    // A deliberate 5xx (model loading, queue timeout, not ready) says what is wrong; only the
    // unexpected ones are logged with their stack and have their message replaced.
    const unexpected = rendered.status >= 500 && (!(exception instanceof ApiError) || rendered.status === 500);
    if (unexpected) {
      this.#logger.error(
        { err: exception, requestId, route: req?.originalUrl && redactUrl(req.originalUrl) },
        `Unhandled error on ${req?.method} ${req?.originalUrl && redactUrl(req.originalUrl)}`,
      );
      if (requestId) rendered.body.error.message = `Internal server error (request id ${requestId})`;
    }
    if (res.headersSent) {
      // A stream already started: the SSE writer reports in-band; never write a second head.
      if (!res.writableEnded) res.end();
      return;
    }
    const out = format ? format.reshape(rendered, requestId) : rendered;
    res.status(out.status).set(rendered.headers).json(out.body);
  }
}
