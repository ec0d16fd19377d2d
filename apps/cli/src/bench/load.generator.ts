/** The engine is what is measured: never answer from (or fill) the response cache. llama.cpp's server ignores the header. */
const BYPASS_CACHE = { 'Cache-Control': 'no-cache, no-store' } as const;

/** One streaming load run against an OpenAI-compatible `/v1/completions` endpoint. */
export interface LoadOptions {
  /** Base URL, e.g. http://127.0.0.1:8000. */
  readonly url: string;
  readonly apiKey?: string;
  /** Concurrent clients. */
  readonly concurrency: number;
  /** Total requests (spread over the clients). */
  readonly requests: number;
  /** New tokens per request (generation ignores end-of-text so every request makes exactly this many). */
  readonly maxTokens: number;
  /** New tokens of request i, when they vary (else maxTokens). */
  maxTokensOf?(i: number): number;
  /**
   * Mean pause of a client before each of its requests, ms (a user reading the last answer):
   * drawn uniformly from [0, 2 x thinkMs) by a generator seeded per client, so that every server
   * gets the same pauses. Default 0 (closed loop).
   */
  readonly thinkMs?: number;
  /** Prompt of request i. */
  prompt(i: number): string;
  /** Extra body fields (model name…). */
  readonly body?: Record<string, unknown>;
  /** Called after each request ends (for a progress bar). */
  onProgress?(done: number, total: number): void;
}

export interface LoadResult {
  readonly requests: number;
  readonly errors: number;
  /**
   * Requests sent again because the connection they went out on was closed by the server before
   * any response (see {@link sendWithReconnect}); they count as requests, not errors.
   */
  readonly reconnects: number;
  readonly errorSamples: string[];
  readonly wallSeconds: number;
  readonly tokens: number;
  readonly tokensPerSecond: number;
  readonly requestsPerSecond: number;
  readonly ttftMs: Percentiles;
  readonly itlMs: Percentiles;
}

export interface Percentiles {
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly mean: number;
}

export function percentiles(values: readonly number[]): Percentiles {
  if (!values.length) return { p50: NaN, p90: NaN, p99: NaN, mean: NaN };
  const s = Float64Array.from(values).sort();
  const at = (q: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

/** Connection failures (undici's codes) that happen before a request reached the server's handler. */
const CLOSED_CONNECTION = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);

/** Sends again at most this many times a request whose kept-alive connection was closed under it. */
const MAX_RECONNECTS = 2;

/**
 * `fetch`, sent again on a fresh connection when the kept-alive one it went out on turns out to be
 * closed before any response came back. llama.cpp's server closes the connection after each
 * streamed response while advertising `Keep-Alive: timeout=5, max=100`; when the client's next
 * request goes out on that connection before its FIN arrives, undici fails it with `fetch failed`
 * (`UND_ERR_SOCKET`, 5–12 ms after sending, nothing received; 1–2 of 32 requests at eight
 * clients, 2026-12-01). Counted as an error, the reference then ran fewer requests than this
 * server and its clients drifted apart. curl and the OpenAI SDKs reconnect in this case too.
 */
async function sendWithReconnect(url: string, init: RequestInit, onReconnect: () => void): Promise<Response> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetch(url, init);
    } catch (err) {
      const code = ((err as { cause?: { code?: string } }).cause ?? {}).code;
      if (attempt >= MAX_RECONNECTS || !code || !CLOSED_CONNECTION.has(code)) throw err;
      onReconnect();
    }
  }
}

/**
 * Streams one request; returns TTFT (from the first send, a reconnect included: what the client
 * waited), the gaps between tokens, and the token count.
 */
async function streamOne(o: LoadOptions, i: number, onReconnect: () => void): Promise<{ ttft: number; gaps: number[]; tokens: number }> {
  const started = performance.now();
  const res = await sendWithReconnect(`${o.url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...BYPASS_CACHE, ...(o.apiKey ? { Authorization: `Bearer ${o.apiKey}` } : {}) },
    body: JSON.stringify({
      prompt: o.prompt(i),
      max_tokens: o.maxTokensOf ? o.maxTokensOf(i) : o.maxTokens,
      temperature: 0.8,
      top_p: 0.95,
      seed: i,
      ignore_eos: true,
      stream: true,
      ...o.body,
    }),
  }, onReconnect);
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
  const decoder = new TextDecoder();
  let buffer = '';
  let last = 0;
  let ttft = NaN;
  let tokens = 0;
  const gaps: number[] = [];
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let cut: number;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const data = JSON.parse(event.slice(6)) as { choices?: { text?: string }[]; error?: unknown };
      if (data.error) throw new Error(`stream error: ${JSON.stringify(data.error)}`);
      const text = data.choices?.[0]?.text;
      if (text === undefined || text === '') continue;
      const now = performance.now();
      if (tokens === 0) ttft = now - started;
      else gaps.push(now - last);
      last = now;
      tokens++;
    }
  }
  return { ttft, gaps, tokens };
}

/** Uniform [0, 1) numbers from a fixed seed (mulberry32): the same sequence for every server. */
export function seededUniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * New tokens of request i in the `chat` workload: spread over [maxTokens / 4, 2 x maxTokens)
 * (16..127 for 64), the same for every server. Streams of different lengths end at different
 * steps, as answers do.
 */
export function chatMaxTokens(maxTokens: number, i: number): number {
  const low = Math.max(1, Math.round(maxTokens / 4));
  return low + ((i * 37) % Math.max(1, 2 * maxTokens - low));
}

/** Runs `requests` streaming requests with `concurrency` clients; each client runs its share in turn. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const ttfts: number[] = [];
  const gaps: number[] = [];
  const errorSamples: string[] = [];
  let errors = 0;
  let reconnects = 0;
  let tokens = 0;
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: o.concurrency }, async (_, client) => {
      const pause = seededUniform(client + 1);
      for (let i = next++; i < o.requests; i = next++) {
        if (o.thinkMs) await new Promise((r) => setTimeout(r, pause() * 2 * (o.thinkMs as number)));
        try {
          const r = await streamOne(o, i, () => reconnects++);
          ttfts.push(r.ttft);
          for (const g of r.gaps) gaps.push(g);
          tokens += r.tokens;
        } catch (err) {
          errors++;
          if (errorSamples.length < 3) errorSamples.push(String(err));
        }
        o.onProgress?.(ttfts.length + errors, o.requests);
      }
    }),
  );
  const wallSeconds = (performance.now() - started) / 1000;
  return {
    requests: o.requests,
    errors,
    reconnects,
    errorSamples,
    wallSeconds,
    tokens,
    tokensPerSecond: tokens / wallSeconds,
    requestsPerSecond: (o.requests - errors) / wallSeconds,
    ttftMs: percentiles(ttfts),
    itlMs: percentiles(gaps),
  };
}

/** Distinct ~32-token prompts. */
export function distinctPrompt(i: number): string {
  return `Request ${i}. Once upon a time there was a little girl named Lily who loved to play in the park with her dog Max every day.`;
}

/**
 * The same long system-style preamble, then a short distinct question. The issue that asked for it
 * says ~540 tokens; the bundled and synthetic models' tokenizers make ~1,500 of it (1,485 with the
 * bundled model's; the 110M synthetic one's reused ~1,500 cached tokens of it and its round's tag).
 */
export const SHARED_PREFIX = Array.from(
  { length: 18 },
  (_, i) => `Rule ${i + 1}: the assistant answers kindly, tells short stories about animals and children, avoids scary endings and uses simple words.`,
).join(' ');
/**
 * Request `i` of the set of requests `set` (a round): every request of a set shares the preamble,
 * and no two sets share any of it (the set's number comes first). Without the set, every round
 * after the first found the prefix its round before had left in both servers' caches, so the
 * median of three rounds measured a warm prefix and a single round a cold one.
 */
export function sharedPrefixPrompt(i: number, set = 0): string {
  return `Set ${set}. ${SHARED_PREFIX}\nQuestion ${i}: tell me about a cat and a dog.`;
}

/** A prompt of about `tokens` tokens for the bundled tokenizer (measured: ~2.9 characters per token on this text). */
export function longPrompt(tokens = 2000): string {
  const sentence = 'Once upon a time there was a little girl named Lily who lived near a big green park. ';
  const chars = Math.round(tokens * 2.9);
  return sentence.repeat(Math.ceil(chars / sentence.length)).slice(0, chars);
}

export interface InterferenceResult {
  readonly streams: number;
  /** Gaps between tokens of the running streams before the long prompt arrived. */
  readonly before: Percentiles & { max: number };
  /** Gaps while the long prompt was being evaluated (from its arrival to its first token). */
  readonly during: Percentiles & { max: number };
  readonly longPromptTokens: number;
  readonly longPromptTtftMs: number;
}

/**
 * Runs `streams` long generations, and once they are all streaming sends one long prompt;
 * reports the running streams' inter-token gaps before and during its evaluation.
 */
export async function runInterference(o: { url: string; apiKey?: string; streams: number; promptTokens: number; body?: Record<string, unknown> }): Promise<InterferenceResult> {
  const headers = { 'Content-Type': 'application/json', ...BYPASS_CACHE, ...(o.apiKey ? { Authorization: `Bearer ${o.apiKey}` } : {}) };
  const stamps: number[][] = Array.from({ length: o.streams }, () => []);
  let started = 0;
  let allStreaming: () => void = () => undefined;
  const streaming = new Promise<void>((r) => (allStreaming = r));
  const controller = new AbortController();
  const runs = stamps.map(async (list, i) => {
    const res = await sendWithReconnect(
      `${o.url}/v1/completions`,
      {
        method: 'POST',
        headers,
        signal: controller.signal,
        body: JSON.stringify({ prompt: distinctPrompt(i), max_tokens: 1500, temperature: 0.8, seed: i, ignore_eos: true, stream: true, ...o.body }),
      },
      () => undefined,
    );
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          if (!event.startsWith('data: {')) continue;
          list.push(performance.now());
          if (list.length === 20 && ++started === o.streams) allStreaming();
        }
      }
    } catch {
      /* aborted at the end of the measurement */
    }
  });
  await streaming;
  await new Promise((r) => setTimeout(r, 1000));
  const injectedAt = performance.now();
  const res = await sendWithReconnect(
    `${o.url}/v1/completions`,
    { method: 'POST', headers, body: JSON.stringify({ prompt: longPrompt(o.promptTokens), max_tokens: 1, temperature: 0, ...o.body }) },
    () => undefined,
  );
  const body = (await res.json()) as { usage?: { prompt_tokens: number } };
  const answeredAt = performance.now();
  await new Promise((r) => setTimeout(r, 300));
  controller.abort();
  await Promise.allSettled(runs);
  const gaps = (from: number, to: number): number[] =>
    stamps.flatMap((list) => list.flatMap((t, i) => (i > 0 && t >= from && t <= to ? [t - list[i - 1]] : [])));
  const withMax = (g: number[]) => ({ ...percentiles(g), max: g.length ? Math.max(...g) : NaN });
  return {
    streams: o.streams,
    before: withMax(gaps(injectedAt - 1000, injectedAt)),
    during: withMax(gaps(injectedAt, answeredAt)),
    longPromptTokens: body.usage?.prompt_tokens ?? NaN,
    longPromptTtftMs: answeredAt - injectedAt,
  };
}
