import type { INestApplication } from '@nestjs/common';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { OpenAPIObject } from '@nestjs/swagger';
import type { AppConfig } from '@app/common';

/** Where the document and its page are served (also the paths the route-coverage test leaves out). */
export const OPENAPI_JSON_PATH = '/openapi.json';
export const DOCS_PATH = '/docs';

/** The OpenAI-style envelope every route but Anthropic's answers errors in (libs/common ErrorEnvelope). */
const ERROR_SCHEMA = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['message', 'type', 'code'],
      properties: {
        message: { type: 'string', example: 'Missing API key: send it as "Authorization: Bearer <key>" or "X-API-Key: <key>"' },
        type: {
          type: 'string',
          enum: ['invalid_request_error', 'authentication_error', 'permission_error', 'not_found_error', 'rate_limit_error', 'server_error', 'service_unavailable_error'],
        },
        code: { type: 'string', description: 'Machine-readable code, stable across releases', example: 'missing_api_key' },
        param: { type: 'string', nullable: true, description: 'The offending request field, when one can be named' },
        details: {
          type: 'array',
          description: 'Per-field details for validation errors',
          items: { type: 'object', required: ['field', 'message'], properties: { field: { type: 'string' }, message: { type: 'string' } } },
        },
      },
    },
  },
};

/** Anthropic's error shape, on `/v1/messages*` (what the official SDK reads). */
const ANTHROPIC_ERROR_SCHEMA = {
  type: 'object',
  required: ['type', 'error'],
  properties: {
    type: { type: 'string', enum: ['error'] },
    error: {
      type: 'object',
      required: ['type', 'message'],
      properties: { type: { type: 'string', example: 'invalid_request_error' }, message: { type: 'string' } },
    },
    request_id: { type: 'string' },
  },
};

/** Request examples of the routes a newcomer tries first (the bundled model's id). */
const EXAMPLES: Record<string, Record<string, unknown>> = {
  'post /v1/chat/completions': { model: 'stories260K', messages: [{ role: 'user', content: 'Tell me a story about a cat.' }], max_tokens: 64 },
  'post /v1/completions': { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 64, temperature: 0 },
  'post /v1/generate': { prompt: 'Once upon a time', max_tokens: 64 },
  'post /v1/generate/stream': { prompt: 'Once upon a time', max_tokens: 64 },
  'post /v1/embeddings': { input: ['The cat sat on the mat.'] },
  'post /v1/messages': { model: 'stories260K', max_tokens: 64, messages: [{ role: 'user', content: 'Tell me a story.' }] },
  'post /v1/responses': { model: 'stories260K', input: 'Tell me a story.', max_output_tokens: 64 },
  'post /tokenize': { content: 'Once upon a time' },
};

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'] as const;

/** Routes that answer without a key (by default): the probes and the scrape, like the guard decides. */
function isPublic(path: string, config: AppConfig): boolean {
  if (/^\/health(\/|$)/i.test(path)) return config.healthPublic;
  if (/^\/metrics$/i.test(path)) return config.metricsPublic;
  return false;
}

/**
 * The document as Nest's decorators describe it, completed with what they cannot say: the two
 * ways to send a key (every route but the public probes), the error envelopes (as the `default`
 * response of every operation), and request examples.
 */
export function buildOpenApiDocument(app: INestApplication, config: AppConfig): OpenAPIObject {
  const base = new DocumentBuilder()
    .setTitle('LLM serving platform API')
    .setDescription(
      'OpenAI-compatible (and Anthropic Messages) API over in-process llama.cpp. Send the API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`. ' +
        'Errors: `{"error": {"message", "type", "code", "param"}}`, on /v1/messages Anthropic\'s `{"type": "error", "error": {...}}`.',
    )
    .setVersion(process.env.npm_package_version ?? '0.1.0')
    .addBearerAuth({ type: 'http', scheme: 'bearer', description: 'API key as a bearer token' }, 'bearer')
    .addApiKey({ type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'API key in the X-API-Key header' }, 'api-key')
    .build();
  const doc = SwaggerModule.createDocument(app, base, { operationIdFactory: (controller, method) => `${controller.replace(/Controller$/, '')}_${method}` });
  doc.components ??= {};
  doc.components.schemas = { ...doc.components.schemas, Error: ERROR_SCHEMA, AnthropicError: ANTHROPIC_ERROR_SCHEMA } as typeof doc.components.schemas;
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      // Either header works on every protected route; the decorators named only one.
      op.security = isPublic(path, config) ? [] : [{ bearer: [] }, { 'api-key': [] }];
      const schema = path.startsWith('/v1/messages') ? 'AnthropicError' : 'Error';
      op.responses = {
        ...op.responses,
        default: { description: 'Error', content: { 'application/json': { schema: { $ref: `#/components/schemas/${schema}` } } } },
      };
      const example = EXAMPLES[`${method} ${path}`];
      const json = op.requestBody && 'content' in op.requestBody ? op.requestBody.content['application/json'] : undefined;
      if (example && json) json.examples = { basic: { summary: 'A first request', value: example } };
    }
  }
  return doc;
}

export function setupOpenApi(app: INestApplication, config: AppConfig): void {
  // Built on the first request (not at start): it walks every controller and DTO.
  SwaggerModule.setup(DOCS_PATH.slice(1), app, () => buildOpenApiDocument(app, config), {
    jsonDocumentUrl: OPENAPI_JSON_PATH,
    raw: ['json'],
    customSiteTitle: 'LLM API docs',
  });
}
