import pinoPretty from 'pino-pretty';
import { destination } from 'pino';

export type LogFormat = 'pretty' | 'json';

/** LOG_FORMAT resolved: `auto` is pretty on a terminal (a person reads it), JSON otherwise (a collector does). */
export function resolveLogFormat(setting: 'auto' | 'pretty' | 'json', stdoutIsTty = process.stdout.isTTY === true): LogFormat {
  return setting === 'auto' ? (stdoutIsTty ? 'pretty' : 'json') : setting;
}

/** Fields the pretty line shows in its message, or that only a machine wants. */
const PRETTY_HIDDEN = 'pid,hostname,context,req,res,responseTime,startup';

/** One human line: `[Context] message`, or for a request `METHOD /path status duration`. */
export function prettyMessage(log: Record<string, unknown>): string {
  const context = typeof log.context === 'string' ? `[${log.context}] ` : '';
  const req = log.req as { method?: string; url?: string } | undefined;
  const res = log.res as { statusCode?: number } | undefined;
  if (req && res) return `${context}${req.method} ${req.url} ${res.statusCode} ${log.responseTime ?? '?'} ms`;
  return `${context}${String(log.msg ?? '')}`;
}

/**
 * Where log lines go: stdout, synchronously (a line written just before `process.exit` is not
 * lost, so a failed start ends with its error), as JSON or through pino-pretty in this thread
 * (not pino's worker transport: the secret redaction in front of it must see every line first).
 */
export function logSink(format: LogFormat, colorize = process.stdout.isTTY === true): { write(line: string): void } {
  if (format === 'json') return destination({ dest: 1, sync: true });
  return pinoPretty({
    destination: 1,
    sync: true,
    colorize,
    singleLine: true,
    // The same ISO-8601 instant as the JSON lines' `time`, in UTC.
    translateTime: "UTC:yyyy-mm-dd'T'HH:MM:ss.l'Z'",
    ignore: PRETTY_HIDDEN,
    messageFormat: (log) => prettyMessage(log),
  });
}
