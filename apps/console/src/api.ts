/** The admin key lives in sessionStorage only: gone when the tab closes, never in a URL or a cookie. */
const KEY_SLOT = 'llm-console-admin-key';

export const session = {
  get key(): string | null {
    return sessionStorage.getItem(KEY_SLOT);
  },
  set(key: string): void {
    sessionStorage.setItem(KEY_SLOT, key);
  },
  clear(): void {
    sessionStorage.removeItem(KEY_SLOT);
  },
};

/** An API error envelope (`{"error": {...}}`) as an exception. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let onUnauthorized: () => void = () => undefined;
/** Called when the key stops working (revoked, rotated): the console signs out. */
export function whenUnauthorized(listener: () => void): void {
  onUnauthorized = listener;
}

async function failure(res: Response): Promise<ApiError> {
  let code = `http_${res.status}`;
  let message = res.statusText || `HTTP ${res.status}`;
  try {
    const body = (await res.json()) as { error?: { code?: string; message?: string } };
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    /* not JSON */
  }
  if (res.status === 401) onUnauthorized();
  return new ApiError(res.status, code, message);
}

function headers(key = session.key): Record<string, string> {
  return { Authorization: `Bearer ${key ?? ''}`, 'Content-Type': 'application/json' };
}

export async function api<T>(method: string, path: string, body?: unknown, key?: string): Promise<T> {
  const res = await fetch(path, { method, headers: headers(key), body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  if (!res.ok) throw await failure(res);
  return (await res.json()) as T;
}

/**
 * POSTs a streaming request and yields each SSE `data:` payload parsed as JSON, until `[DONE]`.
 * An in-band `{"error": ...}` event becomes an ApiError.
 */
export async function* stream(path: string, body: unknown, signal: AbortSignal): AsyncGenerator<Record<string, unknown>> {
  const res = await fetch(path, { method: 'POST', headers: headers(), body: JSON.stringify(body), signal, cache: 'no-store' });
  if (!res.ok || !res.body) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut: number;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') return;
        const event = JSON.parse(data) as Record<string, unknown> & { error?: { code?: string; message?: string } };
        if (event.error) throw new ApiError(200, event.error.code ?? 'stream_error', event.error.message ?? 'stream failed');
        yield event;
      }
    }
  }
}

export interface KeyView {
  id: string;
  name: string;
  hint: string;
  status: 'active' | 'expired' | 'revoked';
  scopes: string[];
  limits: { rpm: number; tpm: number; concurrency: number };
  budget: { day: number; month: number };
  priority: 'low' | 'normal' | 'high';
  created_at: string;
  last_used_at: string | null;
  expires_at: string | null;
  revoked_at: string | null;
  key?: string;
}

export interface UsageLine {
  key_id?: string;
  key_name?: string | null;
  model?: string;
  route?: string;
  day?: string;
  hour?: string;
  requests: number;
  prompt_tokens: number;
  cached_prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cache_hits: number;
  errors: number;
}

export interface UsageReport {
  from: string;
  to: string;
  data: UsageLine[];
  totals: UsageLine;
}

export interface Status {
  instance: string;
  time: string;
  models: { id: string; state: string; backend?: string; architecture?: string; parameters?: number | null; size_bytes?: number; context_size?: number; slots?: number; chat_template?: string; load_ms?: number }[];
  scheduler: { slots_busy: number; slots_total: number; queue_depth: number; queue_capacity: number; accepting: boolean; kv_cache_tokens: number; kv_cache_capacity_tokens: number };
  requests: { active: number; total: number };
  generations: Record<string, number>;
  tokens: { generated: number; prompt: number; prompt_cached: number };
  time_to_first_token_avg_seconds: number | null;
  cache: Record<'exact' | 'semantic', { hit: number; miss: number; error: number }>;
  usage: { buffered: number; pendingBatches: number; lagSeconds: number; flushes: number; failures: number; dropped: number };
  budgets: { backend: string; exceeded: number };
}
