import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiKeysService } from '@app/auth';
import { BUNDLED_MODEL } from '@app/common';
import { synthesizeReranker } from '@app/inference';
import { post } from './support/http';
import { startTestApp, TestApp } from './support/test-app';

const TEXTS = ['Once upon a time, there was a little girl.', ' leading space and  two spaces', 'ünïcödé, 日本語 and 🙂 emoji', 'line one\nline two\ttab', 'a'];

describe('tokenize / detokenize (bundled model)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(() => t?.close());

  it.each(TEXTS)('round trip: detokenize(tokenize(%j)) is the text', async (text) => {
    const tok = await post(t.url, '/tokenize', t.key, { content: text });
    expect(tok.status).toBe(200);
    expect(tok.body.tokens.length).toBe(tok.body.count);
    expect(tok.body.tokens.every((id: unknown) => Number.isInteger(id))).toBe(true);
    const de = await post(t.url, '/detokenize', t.key, { tokens: tok.body.tokens });
    expect(de.status).toBe(200);
    expect(de.body).toEqual({ content: text, prompt: text });
  });

  it('round trip of text that looks like control tokens, with parse_special false (as plain text)', async () => {
    const text = '<s> looks special </s>';
    const tok = await post(t.url, '/tokenize', t.key, { content: text, parse_special: false });
    expect((await post(t.url, '/detokenize', t.key, { tokens: tok.body.tokens })).body.content).toBe(text);
  });

  it('with_pieces: each token with its piece (bytes for part of a character); pieces join into the text', async () => {
    const text = 'Hello 🙂 world';
    const r = await post(t.url, '/tokenize', t.key, { content: text, with_pieces: true });
    const plain = await post(t.url, '/tokenize', t.key, { content: text });
    expect(r.body.tokens.map((p: { id: number }) => p.id)).toEqual(plain.body.tokens);
    const bytes: number[] = [];
    for (const { piece } of r.body.tokens as { piece: string | number[] }[]) bytes.push(...(typeof piece === 'string' ? Buffer.from(piece, 'utf8') : piece));
    expect(Buffer.from(bytes).toString('utf8')).toBe(text);
    // The emoji is byte-fallback tokens here: pieces of bytes.
    expect(r.body.tokens.some((p: { piece: unknown }) => Array.isArray(p.piece))).toBe(true);
  });

  it('add_special puts BOS first (as generation evaluates the prompt); parse_special; the vLLM field names', async () => {
    const plain = (await post(t.url, '/tokenize', t.key, { content: 'Hi there' })).body.tokens as number[];
    const withBos = (await post(t.url, '/tokenize', t.key, { content: 'Hi there', add_special: true })).body.tokens as number[];
    expect(withBos).toEqual([1, ...plain]);
    const vllm = await post(t.url, '/tokenize', t.key, { prompt: 'Hi there', add_special_tokens: true, model: 'stories260K' });
    expect(vllm.body).toEqual({ tokens: withBos, count: withBos.length, max_model_len: 512 });
    const gen = await post(t.url, '/v1/completions', t.key, { prompt: 'Hi there', max_tokens: 1 });
    expect(gen.body.usage.prompt_tokens).toBe(withBos.length);
    // `<s>` is the BOS control token unless parse_special is false (SentencePiece then puts its
    // word-start space after the control token, so such text does not come back byte for byte).
    expect((await post(t.url, '/tokenize', t.key, { content: '<s>' })).body.tokens).toEqual([1]);
    expect((await post(t.url, '/tokenize', t.key, { content: '<s>', parse_special: false })).body.tokens.length).toBeGreaterThan(1);
    expect((await post(t.url, '/detokenize', t.key, { tokens: [1] })).body.content).toBe('<s>');
  });

  it('bad input is a 400 in the OpenAI envelope naming the field; the routes need a key', async () => {
    const cases: [string, object, string, string | null][] = [
      ['/tokenize', {}, 'validation_error', 'content'],
      ['/tokenize', { content: 5 }, 'validation_error', 'content'],
      ['/tokenize', { content: 'a', prompt: 'b' }, 'validation_error', 'prompt'],
      ['/tokenize', { content: 'a', with_pieces: 'yes' }, 'validation_error', 'with_pieces'],
      ['/tokenize', { content: 'a', frob: 1 }, 'unsupported_parameter', 'frob'],
      ['/detokenize', { tokens: [1, 999999] }, 'invalid_token', 'tokens'],
      ['/detokenize', { tokens: [-1] }, 'validation_error', 'tokens'],
      ['/detokenize', { tokens: 'abc' }, 'validation_error', 'tokens'],
    ];
    for (const [path, body, code, param] of cases) {
      const r = await post(t.url, path, t.key, body);
      expect({ path, body, status: r.status, code: r.body.error?.code, param: r.body.error?.param }).toEqual({ path, body, status: 400, code, param });
    }
    expect((await post(t.url, '/tokenize', t.key, { content: 'a', model: 'other' })).status).toBe(404);
    expect((await post(t.url, '/tokenize', undefined, { content: 'a' })).status).toBe(401);
    expect((await post(t.url, '/detokenize', undefined, { tokens: [1] })).status).toBe(401);
  });

  it('rerank without a reranking model is a clear 404', async () => {
    const r = await post(t.url, '/v1/rerank', t.key, { query: 'q', documents: ['a'] });
    expect(r.status).toBe(404);
    expect(r.body.error).toMatchObject({ code: 'rerank_not_configured', message: expect.stringContaining('RERANK_MODEL_PATH') });
  });
});

/**
 * The synthetic reranker with constructed weights (see synthesizeReranker): its score is a
 * monotone function of the share of the document's tokens that occur in the query, computed by
 * llama.cpp's own reranking graph. That is a real, query-dependent relevance signal, so "the
 * relevant document ranks first" holds by construction for documents that share words with the
 * query against ones that share few; it says nothing about semantics (synonyms score nothing).
 */
describe('rerank (synthetic token-overlap reranker)', () => {
  let t: TestApp;
  let rerankerPath: string;
  const query = 'Where does the cat sleep?';
  const documents = ['Stocks fell sharply on Monday.', 'The cat sleeps on the warm bed.', 'A dog barked at the mailman.', 'Bananas are yellow.'];
  beforeAll(async () => {
    rerankerPath = join(mkdtempSync(join(tmpdir(), 'llm-rerank-')), 'overlap-reranker.gguf');
    synthesizeReranker(rerankerPath, BUNDLED_MODEL, 'overlap');
    t = await startTestApp({ RERANK_MODEL_PATH: rerankerPath, CACHE_ENABLED: 'false', USAGE_FLUSH_INTERVAL_MS: '3600000' });
  });
  afterAll(() => t?.close());

  it('ranks the relevant document first; results carry index and relevance_score, best first; usage in tokens', async () => {
    const r = await post(t.url, '/v1/rerank', t.key, { model: 'overlap-reranker', query, documents });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ object: 'list', model: 'overlap-reranker', usage: { prompt_tokens: expect.any(Number), total_tokens: expect.any(Number) } });
    const results = r.body.results as { index: number; relevance_score: number }[];
    expect(results.map((x) => x.index).sort()).toEqual([0, 1, 2, 3]);
    expect(results[0].index).toBe(1);
    expect(results[0].relevance_score).toBeGreaterThan(0.6);
    for (const x of results.slice(1)) expect(x.relevance_score).toBeLessThan(0.5);
    for (let i = 1; i < results.length; i++) expect(results[i].relevance_score).toBeLessThanOrEqual(results[i - 1].relevance_score);
    // Same request, same scores (no sampling in a reranker); a document's score does not depend on the others.
    const alone = await post(t.url, '/rerank', t.key, { query, documents: [{ text: documents[1] }], return_documents: true });
    expect(alone.body.results).toEqual([{ index: 0, relevance_score: expect.closeTo(results[0].relevance_score, 5), document: { text: documents[1] } }]);
    const top = await post(t.url, '/v1/rerank', t.key, { query, documents, top_n: 2 });
    expect(top.body.results).toEqual(results.slice(0, 2).map((x) => ({ index: x.index, relevance_score: expect.closeTo(x.relevance_score, 5) })));
  });

  it('charged in tokens: the ledger holds the prompt tokens under the route; a tokens-per-window limit applies', async () => {
    const keys = t.app.get(ApiKeysService);
    // The tokens are reserved before the reranker runs (issue 17): a key whose window holds them
    // is served once, then refused; one whose whole limit is smaller is refused at once.
    const need = (await post(t.url, '/v1/rerank', t.key, { query, documents: documents.slice(0, 2) })).body.usage.prompt_tokens as number;
    const k = await keys.create({ name: 'rerank-tpm', tpm: need + 1 });
    const first = await post(t.url, '/v1/rerank', k.key, { query, documents: documents.slice(0, 2) });
    expect(first.status).toBe(200);
    expect(first.body.usage.prompt_tokens).toBe(need);
    const second = await post(t.url, '/v1/rerank', k.key, { query, documents: documents.slice(0, 1) });
    expect(second.status).toBe(429);
    expect(second.body.error.code).toBe('token_rate_limit_exceeded');
    const small = await keys.create({ name: 'rerank-small', tpm: need - 1 });
    const tooLarge = await post(t.url, '/v1/rerank', small.key, { query, documents: documents.slice(0, 2) });
    expect([tooLarge.status, tooLarge.body.error.code]).toEqual([429, 'token_rate_limit_exceeded']);
    expect(tooLarge.body.error.message).toMatch(/more than this API key's limit/);
    // The second was refused by its reservation, inside the route (like a spent budget): a request
    // of the route with an error and no tokens in the ledger.
    const report = await fetch(`${t.url}/admin/usage?group_by=key,route`, { headers: { Authorization: `Bearer ${t.key}` } });
    const rows = ((await report.json()) as { data: { key_id: string; route: string; requests: number; prompt_tokens: number; errors: number }[] }).data;
    expect(rows).toContainEqual(expect.objectContaining({ key_id: k.record.id, route: '/v1/rerank', requests: 2, prompt_tokens: first.body.usage.prompt_tokens, completion_tokens: 0, errors: 1 }));
    // The ledger's model is the reranker's.
    const byModel = await fetch(`${t.url}/admin/usage?group_by=model,route`, { headers: { Authorization: `Bearer ${t.key}` } });
    const models = ((await byModel.json()) as { data: { model: string; route: string }[] }).data;
    expect(models).toContainEqual(expect.objectContaining({ model: 'overlap-reranker', route: '/v1/rerank' }));
  });

  it('bad input: 400 naming the field, 404 for another model, a pair too long for the reranker', async () => {
    const cases: [object, number, string, string][] = [
      [{ query: '', documents: ['a'] }, 400, 'validation_error', 'query'],
      [{ query: 'q', documents: [] }, 400, 'validation_error', 'documents'],
      [{ query: 'q', documents: [1, 2] }, 400, 'validation_error', 'documents'],
      [{ query: 'q', documents: ['a'], top_n: 0 }, 400, 'validation_error', 'top_n'],
      [{ query: 'q', documents: ['a'], rank_fields: ['x'] }, 400, 'unsupported_parameter', 'rank_fields'],
      [{ query: 'q', documents: ['a'], model: 'bge-reranker' }, 404, 'rerank_model_not_found', 'model'],
      [{ query: 'q', documents: ['a', 'word '.repeat(3000)] }, 400, 'rerank_input_too_long', 'documents[1]'],
    ];
    for (const [body, status, code, param] of cases) {
      const r = await post(t.url, '/v1/rerank', t.key, body);
      expect({ body: JSON.stringify(body).slice(0, 80), status: r.status, code: r.body.error?.code, param: r.body.error?.param }).toEqual({ body: JSON.stringify(body).slice(0, 80), status, code, param });
    }
    expect((await post(t.url, '/v1/rerank', undefined, { query: 'q', documents: ['a'] })).status).toBe(401);
  });

  it('retrieval.rerank reorders the retrieved chunks by the reranker; the query route too', async () => {
    const admin = { Authorization: `Bearer ${t.key}`, 'Content-Type': 'application/json' };
    expect((await fetch(`${t.url}/v1/collections`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'pets' }) })).status).toBe(201);
    for (const [id, text] of documents.entries()) {
      const res = await fetch(`${t.url}/v1/collections/pets/documents`, { method: 'POST', headers: admin, body: JSON.stringify({ id: `d${id}`, text }) });
      expect(res.status).toBe(201);
    }
    const q = await post(t.url, '/v1/collections/pets/query', t.key, { query, top_k: 2, rerank: true });
    expect(q.status).toBe(200);
    expect(q.body.data).toHaveLength(2);
    expect(q.body.data[0]).toMatchObject({ document_id: 'd1', relevance_score: expect.any(Number) });
    expect(q.body.data[0].relevance_score).toBeGreaterThanOrEqual(q.body.data[1].relevance_score);
    const chat = await post(t.url, '/v1/chat/completions', t.key, { messages: [{ role: 'user', content: query }], max_tokens: 2, retrieval: { collection: 'pets', top_k: 1, rerank: true } });
    expect(chat.status).toBe(200);
    expect(chat.body.sources).toEqual([expect.objectContaining({ document_id: 'd1', relevance_score: expect.any(Number) })]);
  });
});

describe('rerank with random weights (what it can show)', () => {
  let t: TestApp;
  beforeAll(async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'llm-rerank-')), 'random-reranker.gguf');
    synthesizeReranker(path, BUNDLED_MODEL, 'random');
    t = await startTestApp({ RERANK_MODEL_PATH: path });
  });
  afterAll(() => t?.close());

  it('scores are probabilities and deterministic, one per document; their order means nothing', async () => {
    const body = { query: 'Where does the cat sleep?', documents: ['The cat sleeps.', 'Stocks fell.', 'Bananas.'] };
    const a = await post(t.url, '/v1/rerank', t.key, body);
    const b = await post(t.url, '/v1/rerank', t.key, body);
    expect(a.status).toBe(200);
    expect(a.body.results).toHaveLength(3);
    for (const r of a.body.results) expect(r.relevance_score).toBeGreaterThanOrEqual(0), expect(r.relevance_score).toBeLessThanOrEqual(1);
    expect(b.body.results).toEqual(a.body.results);
  });
});

describe('rerank with a reranker file that cannot be loaded', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ RERANK_MODEL_PATH: join(tmpdir(), 'no-such-reranker.gguf') });
  });
  afterAll(() => t?.close());

  it('is a 503 that says why (each request tries again), and generation is unaffected', async () => {
    const r = await post(t.url, '/v1/rerank', t.key, { query: 'q', documents: ['a'] });
    expect(r.status).toBe(503);
    expect(r.body.error).toMatchObject({ code: 'rerank_model_unavailable', message: expect.stringContaining('file not found') });
    expect((await post(t.url, '/v1/completions', t.key, { prompt: 'Hi', max_tokens: 1 })).status).toBe(200);
  });
});
