import http from 'node:http';

/** What one streaming client saw. */
export interface StreamOutcome {
  readonly status: number;
  /** The stream ended with its final event (`"done":true` or `[DONE]`). */
  readonly complete: boolean;
  /** The client went away on purpose; `afterData`: once the stream had started. */
  readonly dropped: boolean;
  readonly afterData: boolean;
  /** A refusal (not 200) carried the error envelope, and a 429/503 its Retry-After. */
  readonly clean?: boolean;
  readonly error?: string;
}

/**
 * One streaming request on its own connection (no keep-alive pool, like hundreds of separate
 * clients). `dropAfterMs` destroys the socket that long after sending: mid-stream if the answer
 * started, in the queue if it did not.
 */
export function streamOnce(base: string, path: string, key: string, body: object, dropAfterMs?: number): Promise<StreamOutcome> {
  return new Promise((resolve) => {
    let status = 0;
    let text = '';
    let afterData = false;
    let settled = false;
    let retryAfter: string | undefined;
    const finish = (o: Omit<StreamOutcome, 'status' | 'afterData'>): void => {
      if (settled) return;
      settled = true;
      let clean: boolean | undefined;
      if (status !== 0 && status !== 200) {
        try {
          const e = (JSON.parse(text) as { error?: { message?: unknown; type?: unknown; code?: unknown } }).error;
          clean = typeof e?.message === 'string' && typeof e.type === 'string' && typeof e.code === 'string';
        } catch {
          clean = false;
        }
        if ((status === 429 || status === 503) && !(Number(retryAfter) >= 1)) clean = false;
      }
      resolve({ status, afterData, clean, ...o });
    };
    const req = http.request(`${base}${path}`, {
      method: 'POST',
      agent: false,
      headers: { 'Content-Type': 'application/json', 'X-API-Key': key },
    });
    req.on('response', (res) => {
      status = res.statusCode ?? 0;
      retryAfter = res.headers['retry-after'];
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        afterData = true;
        text += chunk;
      });
      res.on('end', () => finish({ complete: status === 200 && (text.includes('"done":true') || text.includes('data: [DONE]')), dropped: false }));
      res.on('error', (err) => finish({ complete: false, dropped: false, error: String(err) }));
    });
    req.on('error', (err) => finish({ complete: false, dropped: dropAfterMs !== undefined, error: String(err) }));
    if (dropAfterMs !== undefined) {
      setTimeout(() => {
        if (settled) return;
        req.destroy();
        finish({ complete: false, dropped: true });
      }, dropAfterMs);
    }
    req.end(JSON.stringify(body));
  });
}

/** Counts outcomes by kind for the summary table. */
export function tally(outcomes: readonly StreamOutcome[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const o of outcomes) {
    const kind = o.dropped ? 'dropped' : o.status === 200 ? (o.complete ? 'complete' : 'truncated') : String(o.status || `error ${o.error}`);
    t[kind] = (t[kind] ?? 0) + 1;
  }
  return t;
}
