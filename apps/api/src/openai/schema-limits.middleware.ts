import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { ApiError, sendEarlyRejection } from '@app/common';
import { checkSchemaComplexity } from '@app/inference';
import type { SchemaLimits } from '@app/inference';

const isObject = (v: unknown): v is object => v !== null && typeof v === 'object';

/**
 * The JSON schemas of a request body, with the field each is reported under: a structured-output
 * schema (chat's `response_format`, the Responses API's `text.format`, Anthropic's
 * `output_config.format`), and the tools' parameter schemas, all together (as the grammar
 * compiler checks them).
 */
function schemasIn(body: unknown): [object, string][] {
  if (!isObject(body)) return [];
  const b = body as {
    response_format?: { json_schema?: { schema?: unknown } };
    text?: { format?: { schema?: unknown } };
    output_config?: { format?: { schema?: unknown } };
    tools?: unknown;
    functions?: unknown;
  };
  const found: [object, string][] = [];
  const format = b.response_format?.json_schema?.schema;
  if (isObject(format)) found.push([format, 'response_format']);
  const textFormat = b.text?.format?.schema;
  if (isObject(textFormat)) found.push([textFormat, 'text.format']);
  const outputFormat = b.output_config?.format?.schema;
  if (isObject(outputFormat)) found.push([outputFormat, 'output_config.format']);
  type Tool = { function?: { parameters?: unknown }; parameters?: unknown; input_schema?: unknown } | null;
  const tools = [
    // Chat's {function: {parameters}}, the Responses API's {parameters}, Anthropic's {input_schema}.
    ...(Array.isArray(b.tools) ? b.tools.map((t: Tool) => t?.function?.parameters ?? t?.parameters ?? t?.input_schema) : []),
    ...(Array.isArray(b.functions) ? b.functions.map((f: { parameters?: unknown } | null) => f?.parameters) : []),
  ].filter(isObject);
  if (tools.length > 0) found.push([{ anyOf: tools }, 'tools']);
  return found;
}

/**
 * Refuses a structured-output schema, or tools' parameter schemas, beyond SCHEMA_MAX_* (400
 * `schema_too_complex`) as soon as the body is parsed, before validation: the validation pipe copies and walks a body several times
 * (about 100 ms of event loop per megabyte of schema on a loaded 2-core machine), which a schema
 * that is refused anyway should not cost. The grammar compiler checks the same limits again.
 */
export function schemaLimits(limits: SchemaLimits): RequestHandler {
  return (req: Request, res: Response, next: NextFunction): void => {
    const schemas = req.method === 'POST' ? schemasIn(req.body) : [];
    if (schemas.length === 0) return next();
    try {
      for (const [schema, param] of schemas) checkSchemaComplexity(schema, limits, param);
    } catch (err) {
      if (err instanceof ApiError) return sendEarlyRejection(req, res, err);
      return next(err);
    }
    next();
  };
}
