import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { ApiError, renderError, sendEarlyRejection } from '@app/common';
import { checkSchemaComplexity } from '@app/inference';
import type { SchemaLimits } from '@app/inference';

/** A structured-output JSON schema in a request body: chat's `response_format`, or the Responses API's `text.format`. */
function schemaIn(body: unknown): object | undefined {
  if (body === null || typeof body !== 'object') return undefined;
  const b = body as { response_format?: { json_schema?: { schema?: unknown } }; text?: { format?: { schema?: unknown } } };
  const schema = b.response_format?.json_schema?.schema ?? b.text?.format?.schema;
  return schema !== null && typeof schema === 'object' ? schema : undefined;
}

/**
 * Refuses a structured-output schema beyond SCHEMA_MAX_* (400 `schema_too_complex`) as soon as the
 * body is parsed, before validation: the validation pipe copies and walks a body several times
 * (about 100 ms of event loop per megabyte of schema on a loaded 2-core machine), which a schema
 * that is refused anyway should not cost. The grammar compiler checks the same limits again.
 */
export function schemaLimits(limits: SchemaLimits): RequestHandler {
  return (req: Request, res: Response, next: NextFunction): void => {
    const schema = req.method === 'POST' ? schemaIn(req.body) : undefined;
    if (schema === undefined) return next();
    try {
      checkSchemaComplexity(schema, limits);
    } catch (err) {
      if (err instanceof ApiError) return sendEarlyRejection(req, res, renderError(err));
      return next(err);
    }
    next();
  };
}
