import type { AppConfig } from '@app/common';

/** Where a command sends its requests; flags win over the environment and `.env`. */
export interface ServerTarget {
  /** Server base URL (default from HOST and PORT, e.g. http://127.0.0.1:8000). */
  url?: string;
  /** API key (default $API_KEY, else the first of API_KEYS). */
  key?: string;
}

/** The server did not answer at all (not running, wrong URL): callers may fall back to the configuration. */
export class ServerUnreachable extends Error {}

/** The base URL a command talks to: `--url`, else HOST and PORT (a wildcard HOST means loopback). */
export function serverUrl(target: ServerTarget, config: Pick<AppConfig, 'localUrl'>): string {
  return (target.url ?? config.localUrl()).replace(/\/+$/, '');
}

/**
 * One JSON request to the running server with the command's key: its JSON body back, an Error
 * naming the route and the server's message for a 4xx/5xx, ServerUnreachable when nothing answers.
 */
export async function serverRequest(
  target: ServerTarget,
  config: Pick<AppConfig, 'localUrl' | 'apiKeys'>,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<unknown> {
  const url = serverUrl(target, config);
  const key = target.key ?? (process.env.API_KEY?.trim() || config.apiKeys[0]);
  let res: Response;
  try {
    res = await fetch(`${url}${path}`, {
      method,
      headers: { ...(key ? { Authorization: `Bearer ${key}` } : {}), ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
    throw new ServerUnreachable(`server not reachable at ${url} (${cause}); start it (npm start) or pass --url`);
  }
  const json = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${json?.error?.message ?? res.statusText}`);
  return json;
}
