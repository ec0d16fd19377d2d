import { createParamDecorator, ExecutionContext } from '@nestjs/common';
import type { Response } from 'express';
import type { RenderedError } from '../errors/all-exceptions.filter';
import { clientAbortSignal, writeSse } from './sse.writer';

/** What a service returns to a route that can answer with JSON or with an SSE stream. */
export type Reply =
  | { readonly kind: 'json'; readonly body: unknown; readonly headers?: Record<string, string> }
  | {
      readonly kind: 'sse';
      readonly events: AsyncIterable<unknown>;
      /** Sent after the last event; OpenAI streams end with `[DONE]`. */
      readonly terminator?: string;
      readonly headers?: Record<string, string>;
      /** Events are `{event?, data, json?}` frames: `data` is sent (`json` when set: it is `data` already encoded), and `event` as the SSE event name. */
      readonly named?: boolean;
      /** The wire format's own error event, for an error after the stream started (see writeSse). */
      readonly errorEvent?: (error: RenderedError) => { event?: string; data: unknown };
    };

export async function sendReply(res: Response, reply: Reply): Promise<void> {
  if (reply.kind === 'json') {
    // Written directly: a generation's answer is never a conditional GET, so Express's send()
    // (an ETag hashed from every body, freshness checks) would be pure cost on each response.
    const body = JSON.stringify(reply.body);
    res.statusCode = 200;
    if (reply.headers) for (const name in reply.headers) res.setHeader(name, reply.headers[name]);
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
    return;
  }
  await writeSse(res, reply.events, {
    encode: reply.named
      ? (frame) => (frame as { json?: string }).json ?? JSON.stringify((frame as { data: unknown }).data)
      : (event) => JSON.stringify(event),
    eventName: reply.named ? (frame) => (frame as { event?: string }).event : undefined,
    terminator: reply.terminator,
    headers: reply.headers,
    errorEvent: reply.errorEvent,
  });
}

/** Injects an AbortSignal that fires when the client disconnects before the response is done. */
export const ClientSignal = createParamDecorator(
  (_: unknown, ctx: ExecutionContext): AbortSignal => clientAbortSignal(ctx.switchToHttp().getResponse<Response>()),
);
