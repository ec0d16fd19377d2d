import fc from 'fast-check';
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUNDLED_MODEL } from '@app/common';
import { synthesizeReranker } from '@app/inference';
import { startTestApp, TestApp } from '../support/test-app';
import { record, size } from './reliability.support';

/**
 * Property-based fuzzing of every JSON endpoint through real HTTP on the real app and model:
 * whatever arrives, the answer is a 4xx in the error envelope (or a 2xx where the input is in fact
 * acceptable, such as invalid UTF-8 that the parser replaces), never a 5xx, a dropped connection or
 * a hang. Each category's count of cases lands in docs/RELIABILITY.md.
 */

interface Raw {
  readonly status: number;
  readonly body: string;
}

/** A raw request: exact bytes and headers (fetch would rewrite some), with a hang deadline. */
function send(base: string, method: string, path: string, body: Buffer | string | undefined, headers: Record<string, string>): Promise<Raw> {
  return new Promise((resolve, reject) => {
    // An explicit length: Node sends a DELETE body without one, which no server can frame.
    const length: Record<string, string> = body === undefined ? {} : { 'Content-Length': String(Buffer.byteLength(body)) };
    const req = http.request(`${base}${path}`, { method, headers: { ...length, ...headers }, timeout: 20_000 });
    let answered = false;
    req.on('timeout', () => {
      req.destroy();
      reject(new Error(`hang: ${method} ${path} got no answer within 20 s`));
    });
    req.on('response', (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    // A server that answers 413 before reading the whole body may close the socket under the
    // writer (EPIPE/ECONNRESET): the answer already came, so that is not a failure.
    req.on('error', (err) => (answered ? undefined : reject(err)));
    req.end(body);
  });
}

interface Tally {
  tried: number;
  client: number;
  ok: number;
  server: number;
}

type Endpoint = { readonly path: string; readonly method: 'POST' | 'DELETE'; readonly base: Record<string, unknown>; readonly fields: Record<string, Kind> };
type Kind = 'string' | 'int' | 'number' | 'boolean' | 'array' | 'object' | 'stringOrArray';

const USER = [{ role: 'user', content: 'Hi' }];
const ENDPOINTS: readonly Endpoint[] = [
  {
    path: '/v1/generate', method: 'POST', base: { prompt: 'Hi', max_tokens: 1 },
    fields: { prompt: 'string', max_tokens: 'int', temperature: 'number', top_p: 'number', stop_sequences: 'array', stream: 'boolean', ignore_eos: 'boolean' },
  },
  {
    path: '/v1/generate/stream', method: 'POST', base: { prompt: 'Hi', max_tokens: 1 },
    fields: { prompt: 'string', max_tokens: 'int', temperature: 'number', top_p: 'number', stop_sequences: 'array', ignore_eos: 'boolean' },
  },
  {
    path: '/v1/completions', method: 'POST', base: { prompt: 'Hi', max_tokens: 1 },
    fields: { model: 'string', prompt: 'stringOrArray', max_tokens: 'int', temperature: 'number', top_p: 'number', stop: 'stringOrArray', seed: 'int', n: 'int', stream: 'boolean', top_k: 'int', presence_penalty: 'number' },
  },
  {
    path: '/v1/chat/completions', method: 'POST', base: { messages: USER, max_tokens: 1 },
    fields: { model: 'string', messages: 'array', max_tokens: 'int', max_completion_tokens: 'int', temperature: 'number', stream: 'boolean', stop: 'stringOrArray', response_format: 'object' },
  },
  {
    path: '/v1/embeddings', method: 'POST', base: { input: 'Hi' },
    fields: { model: 'string', input: 'stringOrArray', encoding_format: 'string' },
  },
  {
    path: '/v1/responses', method: 'POST', base: { input: 'Hi', max_output_tokens: 1 },
    fields: { model: 'string', input: 'stringOrArray', instructions: 'string', max_output_tokens: 'int', temperature: 'number', top_p: 'number', stream: 'boolean', tools: 'array', text: 'object', previous_response_id: 'string', metadata: 'object', store: 'boolean' },
  },
  {
    path: '/v1/messages', method: 'POST', base: { model: 'stories260K', max_tokens: 1, messages: USER },
    fields: { model: 'string', max_tokens: 'int', messages: 'array', system: 'stringOrArray', stop_sequences: 'array', temperature: 'number', top_k: 'int', stream: 'boolean', tools: 'array', tool_choice: 'object' },
  },
  {
    path: '/v1/messages/count_tokens', method: 'POST', base: { model: 'stories260K', messages: USER },
    fields: { model: 'string', messages: 'array', system: 'stringOrArray', tools: 'array' },
  },
  { path: '/tokenize', method: 'POST', base: { content: 'Hi' }, fields: { content: 'string', add_special: 'boolean', parse_special: 'boolean', with_pieces: 'boolean' } },
  { path: '/detokenize', method: 'POST', base: { tokens: [1] }, fields: { tokens: 'array' } },
  {
    path: '/v1/rerank', method: 'POST', base: { query: 'Hi', documents: ['a'] },
    fields: { model: 'string', query: 'string', documents: 'array', top_n: 'int', return_documents: 'boolean' },
  },
];
/** Anthropic's routes answer errors in Anthropic's shape. */
const ANTHROPIC_PATH = /^\/v1\/messages/;

/**
 * The text-carrying body of an endpoint, for the tests that put hostile text into prompts:
 * `nasty` puts the text everywhere text goes (stop strings too), `long` makes a prompt longer than
 * the context (repeated three times, except on /v1/generate whose prompt field is bounded). Null:
 * the endpoint has no such case.
 */
function textBody(ep: Endpoint, text: string, mode: 'nasty' | 'long'): Record<string, unknown> | null {
  const long = mode === 'long';
  const t3 = long ? text.repeat(3) : text;
  switch (ep.path) {
    case '/v1/chat/completions':
      return long ? { max_tokens: 1, messages: [{ role: 'user', content: t3 }] } : { max_tokens: 1, messages: [{ role: 'user', content: text }, { role: 'system', content: text }], stop: [text] };
    case '/v1/embeddings':
      return { input: long ? t3 : [text, text] };
    case '/v1/responses':
      return long ? { input: t3, max_output_tokens: 1 } : { input: text, instructions: text, max_output_tokens: 1 };
    case '/v1/messages':
      return { model: 'stories260K', max_tokens: 1, messages: [{ role: 'user', content: t3 }], ...(long ? {} : { system: text, stop_sequences: [text] }) };
    case '/v1/messages/count_tokens':
      // Counting never refuses a long prompt (it does not generate).
      return long ? null : { model: 'stories260K', system: text, messages: [{ role: 'user', content: text }] };
    case '/tokenize':
      return long ? null : { content: text };
    case '/detokenize':
      return null;
    case '/v1/rerank':
      return { query: text, documents: [t3] };
    case '/v1/completions':
      return { prompt: t3, max_tokens: 1, ...(long ? {} : { stop: [text] }) };
    default:
      // /v1/generate: the prompt field holds 4,096 characters at most, so it is not repeated.
      return { prompt: text, max_tokens: 1, ...(long ? {} : { stop_sequences: [text] }) };
  }
}

/** DELETE /admin/cache reads a query, but a body sent to it still goes through the parsers. */
const ADMIN: Endpoint = { path: '/admin/cache', method: 'DELETE', base: {}, fields: {} };

const anyObject = fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { minKeys: 1, maxKeys: 4 });
/** A JSON value that is never of the kind a field wants (null is "absent" for optional fields). */
function wrongValue(kind: Kind): fc.Arbitrary<unknown> {
  const num = fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }));
  switch (kind) {
    case 'string':
    case 'stringOrArray':
      return fc
        .oneof(num, fc.boolean(), anyObject, fc.array(fc.oneof(num, fc.boolean(), anyObject), { minLength: 1, maxLength: 4 }))
        // Token ids are a valid completions prompt and embeddings input.
        .filter((v) => !(kind === 'stringOrArray' && Array.isArray(v) && v.every((x) => Number.isInteger(x) && (x as number) >= 0)));
    case 'int':
    case 'number':
      return fc.oneof(fc.string(), fc.boolean(), anyObject, fc.array(num, { maxLength: 3 }));
    case 'boolean':
      return fc.oneof(num, fc.string(), anyObject, fc.array(fc.boolean(), { maxLength: 3 }));
    case 'array':
      return fc.oneof(num, fc.boolean(), anyObject);
    case 'object':
      return fc.oneof(num, fc.string(), fc.boolean(), fc.array(num, { maxLength: 3 }));
  }
}

describe('hostile input: every JSON endpoint answers a 4xx envelope, never a 5xx, crash or hang', () => {
  let t: TestApp;
  const runs = size(15, 150);
  const results: Record<string, Tally> = {};

  beforeAll(async () => {
    // A reranker too, so that /v1/rerank answers valid input (and its long inputs reach the model's check).
    const reranker = join(mkdtempSync(join(tmpdir(), 'llm-hostile-')), 'reranker.gguf');
    synthesizeReranker(reranker, BUNDLED_MODEL, 'overlap');
    t = await startTestApp({ CONTEXT_SIZE: '512', BODY_LIMIT: '1mb', RERANK_MODEL_PATH: reranker });
  });
  afterAll(async () => {
    await t?.close();
  });

  const headers = (extra: Record<string, string> = {}): Record<string, string> => ({ 'X-API-Key': t.key, ...extra });
  const json = { 'Content-Type': 'application/json' };

  /** Sends, checks the contract, tallies. `accept2xx`: the input may be legitimately acceptable. */
  async function check(category: string, ep: Endpoint, body: Buffer | string | undefined, hdrs: Record<string, string>, accept2xx = false, path = ep.path, method: string = ep.method): Promise<void> {
    const tally = (results[category] ??= { tried: 0, client: 0, ok: 0, server: 0 });
    tally.tried++;
    const res = await send(t.url, method, path, body, headers(hdrs));
    if (res.status >= 500) tally.server++;
    const what = `${method} ${path} → ${res.status} ${res.body.slice(0, 300)}`;
    if (res.status >= 200 && res.status < 300) {
      tally.ok++;
      if (!accept2xx) throw new Error(`accepted hostile input: ${what}`);
      return;
    }
    if (res.status < 400 || res.status >= 500) throw new Error(`not a 4xx: ${what}`);
    tally.client++;
    let envelope: { type?: unknown; error?: { message?: unknown; type?: unknown; code?: unknown } };
    try {
      envelope = JSON.parse(res.body);
    } catch {
      throw new Error(`4xx without a JSON envelope: ${what}`);
    }
    const e = envelope.error;
    if (ANTHROPIC_PATH.test(path)) {
      if (envelope.type !== 'error' || !e || typeof e.message !== 'string' || typeof e.type !== 'string') throw new Error(`4xx without Anthropic's error shape: ${what}`);
      return;
    }
    if (!e || typeof e.message !== 'string' || typeof e.type !== 'string' || typeof e.code !== 'string') throw new Error(`4xx without the envelope: ${what}`);
  }

  const every = [...ENDPOINTS, ADMIN];
  const property = <T>(arb: fc.Arbitrary<T>, fn: (v: T) => Promise<void>, numRuns = runs): Promise<void> =>
    fc.assert(fc.asyncProperty(arb, fn), { numRuns, endOnFailure: true });

  it('malformed JSON: truncated documents and random text', async () => {
    for (const ep of every) {
      const full = JSON.stringify({ ...ep.base, extra: { nested: [1, 2, { a: 'b' }] } });
      const malformed = fc.oneof(
        fc.integer({ min: 1, max: full.length - 1 }).map((cut) => full.slice(0, cut)),
        fc.string({ minLength: 1, maxLength: 200 }),
        fc.constantFrom('{', '{"prompt":}', "{'prompt':'x'}", '{"a":1,}', '[1,2', 'NaN', '{"max_tokens":NaN}', '{"max_tokens":Infinity}', 'undefined', '\u0000', '{"a":"\\x41"}', '{"a":"\\u12"}'),
      ).filter((text) => {
        try {
          JSON.parse(text);
          return false;
        } catch {
          return true;
        }
      });
      await property(malformed, (text) => check('malformed JSON', ep, text, json));
    }
  });

  it('wrong types in every field', async () => {
    for (const ep of ENDPOINTS) {
      const arb = fc.constantFrom(...Object.keys(ep.fields)).chain((field) => wrongValue(ep.fields[field]).map((v) => ({ field, v })));
      await property(arb, ({ field, v }) => check('wrong types', ep, JSON.stringify({ ...ep.base, [field]: v }), json));
      // Not an object at all.
      await property(fc.oneof(fc.jsonValue().filter((v) => v === null || typeof v !== 'object' || Array.isArray(v))), (v) =>
        check('wrong types', ep, JSON.stringify(v), json),
      );
    }
  });

  it('huge and non-finite numbers', async () => {
    const literals = fc.oneof(
      fc.constantFrom('1e309', '-1e309', '1e308', '-1e308', '9007199254740993', '123456789012345678901234567890', '1e-400', '-0', '4.9e-324', '1.7976931348623157e308'),
      fc.double({ noNaN: true, noDefaultInfinity: true }).filter((x) => Math.abs(x) > 1e6 || (x !== 0 && Math.abs(x) < 1e-6)).map(String),
    );
    for (const ep of ENDPOINTS.filter((e) => 'max_tokens' in e.base)) {
      // Out of range for max_tokens in every case (0 and below, fractional, beyond the context).
      await property(literals.filter((l) => !(Number(l) >= 1 && Number(l) <= 2048 && Number.isInteger(Number(l)))), (l) =>
        check('huge and non-finite numbers', ep, `{${JSON.stringify(ep.base).slice(1, -1).replace(/"max_tokens":1/, `"max_tokens":${l}`)}}`, json),
      );
      await property(literals.filter((l) => !(Number(l) >= 0 && Number(l) <= 2)), (l) =>
        check('huge and non-finite numbers', ep, `{${JSON.stringify(ep.base).slice(1, -1)},"temperature":${l}}`, json),
      );
    }
  });

  it('negative and fractional max_tokens', async () => {
    const bad = fc.oneof(
      fc.integer({ max: 0 }),
      fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 }).filter((x) => !Number.isInteger(x)),
    );
    for (const ep of ENDPOINTS.filter((e) => 'max_tokens' in e.base)) {
      await property(bad, (n) => check('negative and fractional max_tokens', ep, JSON.stringify({ ...ep.base, max_tokens: n }), json));
    }
    const chat = ENDPOINTS.find((e) => e.path === '/v1/chat/completions')!;
    await property(bad, (n) => check('negative and fractional max_tokens', chat, JSON.stringify({ messages: USER, max_completion_tokens: n }), json));
  });

  it('a 10 MB body is refused with 413 on every endpoint, and the server goes on', async () => {
    const big = JSON.stringify({ prompt: 'a'.repeat(10 * 1024 * 1024), input: 'x', messages: USER });
    for (const ep of every) await check('10 MB body', ep, big, json);
    expect((await fetch(`${t.url}/health`)).status).toBe(200);
  });

  it('invalid UTF-8 inside JSON strings', async () => {
    const bytes = fc.uint8Array({ minLength: 1, maxLength: 64 }).map((b) => Buffer.from(b.map((x) => x | 0x80)));
    // (count_tokens has no max_tokens; the messages body below carries one.)
    for (const ep of ENDPOINTS.filter((e) => e.path !== '/v1/messages/count_tokens')) {
      const [field] = Object.keys(ep.base);
      const arb = fc.tuple(bytes, fc.boolean());
      await property(arb, ([b, asKey]) => {
        const rest = JSON.stringify({ ...ep.base, [field]: undefined }).slice(1, -1);
        const head = Buffer.from(asKey ? `{"` : `{${rest}${rest ? ',' : ''}"${field}":"`);
        const tail = Buffer.from(asKey ? `":1,${rest}}` : '"}');
        // Chat and Anthropic's routes carry their text inside messages: replace the content instead.
        const inMessages = field === 'messages' || ANTHROPIC_PATH.test(ep.path);
        const body = inMessages
          ? Buffer.concat([Buffer.from('{"model":"stories260K","max_tokens":1,"messages":[{"role":"user","content":"'), b, Buffer.from('"}]}')])
          : Buffer.concat([head, b, tail]);
        // Replaced by U+FFFD by the decoder, the text is a legitimate prompt.
        return check('invalid UTF-8', ep, body, json, true);
      });
    }
  });

  it('control characters and lone surrogates in prompts and messages', async () => {
    const nasty = fc
      .array(fc.oneof(fc.integer({ min: 0, max: 0x1f }), fc.integer({ min: 0x7f, max: 0x9f }), fc.integer({ min: 0xd800, max: 0xdfff }), fc.constantFrom(0xfeff, 0x202e, 0x200b, 0xfffe, 0xffff)), { minLength: 1, maxLength: 64 })
      .map((codes) => String.fromCharCode(...codes));
    for (const ep of ENDPOINTS) {
      if (!textBody(ep, 'x', 'nasty')) continue;
      await property(nasty, (text) => check('control characters', ep, JSON.stringify(textBody(ep, text, 'nasty')), json, true));
    }
  });

  it('prompts longer than the context', async () => {
    // CONTEXT_SIZE 512: some thousand tokens, still under the 4,096-character field limit.
    const long = fc.integer({ min: 600, max: 1000 }).map((n) => Array.from({ length: n }, (_, i) => (i % 2 ? 'x' : 'q')).join(' ').slice(0, 4000));
    for (const ep of ENDPOINTS) {
      if (!textBody(ep, 'x', 'long')) continue;
      await property(long, (text) => check('prompt longer than the context', ep, JSON.stringify(textBody(ep, text, 'long')), json), Math.max(3, Math.floor(runs / 3)));
    }
  });

  it('thousands of stop sequences, and stop sequences too long', async () => {
    const many = fc.oneof(
      fc.integer({ min: 17, max: 5000 }).map((n) => Array.from({ length: n }, (_, i) => `s${i}`)),
      fc.integer({ min: 257, max: 20_000 }).map((n) => ['x'.repeat(n)]),
    );
    for (const ep of ENDPOINTS.filter((e) => 'stop_sequences' in e.fields || 'stop' in e.fields)) {
      const field = 'stop_sequences' in ep.fields ? 'stop_sequences' : 'stop';
      await property(many, (stops) => check('thousands of stop sequences', ep, JSON.stringify({ ...ep.base, [field]: stops }), json));
    }
  });

  it('deep nesting', async () => {
    const depth = fc.integer({ min: 64, max: size(20_000, 150_000) });
    for (const ep of every) {
      const [field = 'prompt'] = Object.keys(ep.base);
      await property(fc.tuple(depth, fc.boolean()), ([d, arrays]) => {
        const nested = arrays ? `${'['.repeat(d)}"x"${']'.repeat(d)}` : `${'{"a":'.repeat(d)}"x"${'}'.repeat(d)}`;
        return check('deep nesting', ep, `{"${field}":${nested}}`, json);
      }, Math.max(3, Math.floor(runs / 2)));
    }
  });

  it('odd Content-Types', async () => {
    const types = fc.oneof(
      fc.constantFrom(
        'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/octet-stream',
        'application/json; charset=utf-16', 'application/json; charset=latin1', 'application/json; charset=bogus', 'application/jsonp', 'json',
        'application/', '*/*', 'application/json, text/html', ';;;', 'application/x-ndjson', 'text/json',
      ),
      fc.string({ minLength: 1, maxLength: 40 }).filter((s) => /^[\x21-\x7e][\x20-\x7e]*$/.test(s) && !/^\s*application\/json\s*(;|$)/i.test(s)),
    );
    for (const ep of every) {
      const body = JSON.stringify(ep.base.messages ? ep.base : { ...ep.base });
      await property(types, (type) => check('odd Content-Types', ep, body || '{}', { 'Content-Type': type }));
      // A body with no Content-Type at all.
      await check('odd Content-Types', ep, Buffer.from(body || '{}'), {});
    }
  });

  it('GET/DELETE /admin/cache with hostile query strings', async () => {
    const value = fc.oneof(fc.string({ maxLength: 50 }), fc.constantFrom('EXACT', 'exact ', 'semantic\u0000', '', 'both', '%00', '%ff%fe'));
    await property(value, (v) => check('admin query strings', ADMIN, undefined, {}, false, `/admin/cache?layer=${encodeURIComponent(v).replace('%2500', '%00').replace('%25ff%25fe', '%ff%fe')}`));
    await property(fc.array(fc.constantFrom('exact', 'semantic', 'x'), { minLength: 2, maxLength: 5 }), (vs) =>
      check('admin query strings', ADMIN, undefined, {}, false, `/admin/cache?${vs.map((v) => `layer=${v}`).join('&')}`),
    );
    // The query parser is Express's simple one: `layer[a]` is another parameter, ignored like an
    // unknown body field, so a 200 (flush of both layers) is the documented answer there.
    await property(fc.constantFrom('layer[]=exact', 'layer[a]=exact', 'layer[__proto__]=x', 'layer=%E0%A4%A', '__proto__[layer]=exact', 'layer=' + 'x'.repeat(8000)), (q) =>
      check('admin query strings', ADMIN, undefined, {}, !q.startsWith('layer='), `/admin/cache?${q}`),
    );
  });

  it('the server is still healthy and every slot is free', async () => {
    const res = await fetch(`${t.url}/health`);
    expect(res.status).toBe(200);
    const { InferenceService } = await import('@app/inference');
    expect(t.app.get(InferenceService).scheduler.busySlots).toBe(0);
    let total = 0;
    for (const [category, tally] of Object.entries(results)) {
      total += tally.tried;
      expect(tally.server).toBe(0);
      record({
        section: 'hostile input',
        check: category,
        tried: tally.tried,
        result: `${tally.client} × 4xx envelope, ${tally.ok} × 2xx (acceptable input), ${tally.server} × 5xx, 0 hangs`,
        ok: tally.server === 0,
      });
    }
    console.log(`hostile input: ${total} requests`, JSON.stringify(results));
  });
});
