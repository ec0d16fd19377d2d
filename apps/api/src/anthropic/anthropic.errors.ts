import type { ErrorFormat } from '@app/common';
import { anthropicErrorBody } from '../generation/presenters/anthropic.presenter';

const MESSAGES_PATH = /^\/v1\/messages(\/|$)/;

/**
 * Errors on Anthropic's routes have Anthropic's shape, `{"type": "error", "error": {"type",
 * "message"}, "request_id"}`, with the same HTTP status (and headers such as Retry-After) as
 * anywhere else: the official SDK maps statuses to its error classes and reads `error.message`.
 */
export const ANTHROPIC_ERRORS: ErrorFormat = {
  matches: (path) => MESSAGES_PATH.test(path),
  reshape: (rendered, requestId) => ({ status: rendered.status, body: anthropicErrorBody(rendered, requestId) }),
};
