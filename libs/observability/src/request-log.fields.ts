import type { IncomingMessage, ServerResponse } from 'node:http';
import { RequestTelemetry } from './request.telemetry';

/** Longest prompt text put in a log line (LOG_PROMPTS=true). */
export const MAX_LOGGED_PROMPT = 2000;

function promptOf(body: unknown): string | undefined {
  if (!body || typeof body !== 'object') return undefined;
  const b = body as { prompt?: unknown; messages?: unknown; input?: unknown };
  const value = b.prompt ?? b.messages ?? b.input;
  if (value === undefined) return undefined;
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return text.length > MAX_LOGGED_PROMPT ? `${text.slice(0, MAX_LOGGED_PROMPT)}…` : text;
}

/**
 * The fields added to a request's completion log line: route template, status, latency, model,
 * tokens, cache result, key id (an id, never the key), scheduler timings, trace id; the prompt only when
 * LOG_PROMPTS is on.
 */
export function requestLogFields(req: IncomingMessage, res: ServerResponse, logPrompts: boolean): Record<string, unknown> {
  const t = RequestTelemetry.of(req);
  const fields: Record<string, unknown> = {
    route: t?.route,
    status: res.writableFinished ? res.statusCode : 499,
    latency_ms: t ? Math.round((performance.now() - t.startedAt) * 10) / 10 : undefined,
  };
  if (!t) return fields;
  if (t.keyId) fields.key_id = t.keyId;
  if (t.model) fields.model = t.model;
  if (t.cache) fields.cache = t.cache;
  if (t.rateLimited) fields.rate_limited = t.rateLimited;
  if (t.finishReason) {
    fields.tokens = { prompt: t.promptTokens, cached: t.cachedPromptTokens, completion: t.completionTokens };
    fields.finish_reason = t.finishReason;
  }
  if (t.queueWaitMs !== undefined) fields.queue_ms = t.queueWaitMs;
  if (t.ttftMs !== undefined) fields.ttft_ms = t.ttftMs;
  if (t.traceId) {
    fields.trace_id = t.traceId;
    fields.span_id = t.spanId;
  }
  if (logPrompts) {
    const prompt = promptOf((req as IncomingMessage & { body?: unknown }).body);
    if (prompt !== undefined) fields.prompt = prompt;
  }
  return fields;
}
