import http from 'node:http';

export interface Reply {
  readonly status: number;
  readonly headers: Headers;
  readonly body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** POSTs JSON with a key (X-API-Key) and extra headers; reads the whole answer. */
export async function post(url: string, path: string, key: string | undefined, body: object, headers: Record<string, string> = {}): Promise<Reply> {
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(key ? { 'X-API-Key': key } : {}), ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* SSE or empty */
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** A streaming request held open after its first event; `drop()` disconnects like a client that goes away. */
export interface OpenStream {
  readonly status: number;
  drop(): void;
}

export function openStream(url: string, path: string, key: string, body: object): Promise<OpenStream> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-API-Key': key },
    });
    req.on('response', (res) => {
      const done = (): void => resolve({ status: res.statusCode ?? 0, drop: () => req.destroy() });
      if (res.statusCode !== 200) {
        res.resume();
        res.on('end', done);
      } else res.once('data', done);
    });
    req.on('error', (err) => (String(err).includes('socket hang up') ? undefined : reject(err)));
    req.end(JSON.stringify(body));
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitFor(check: () => boolean | Promise<boolean>, ms = 10_000, step = 50): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await sleep(step);
  }
}
