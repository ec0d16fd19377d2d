import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import { waitFor } from './support/metrics';
import { ServerProcess, startServer, waitForModel } from './support/server-process';

const KEY = 'sk-logs-test-key-0123456789';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: { key: string; value: Record<string, unknown> }[];
}

/** A minimal OTLP/HTTP receiver (JSON encoding, what @opentelemetry/exporter-trace-otlp-http sends). */
class OtlpReceiver {
  readonly spans: (OtlpSpan & { service: string })[] = [];
  readonly contentTypes = new Set<string>();
  #server: Server | undefined;
  url = '';

  async start(): Promise<void> {
    this.#server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        if (req.method === 'POST' && req.url === '/v1/traces') {
          this.contentTypes.add(String(req.headers['content-type']));
          const payload = JSON.parse(body) as {
            resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: OtlpSpan[] }[] }[];
          };
          for (const rs of payload.resourceSpans) {
            const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '';
            for (const ss of rs.scopeSpans) for (const span of ss.spans) this.spans.push({ ...span, service });
          }
        }
        res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => this.#server?.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }
}

function logLines(server: ServerProcess): Record<string, unknown>[] {
  return server
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function completionLine(server: ServerProcess, requestId: string): Record<string, unknown> | undefined {
  return logLines(server).find((l) => (l.req as { id?: string } | undefined)?.id === requestId && typeof l.status === 'number');
}

async function generate(server: ServerProcess, requestId: string, body: object): Promise<Response> {
  return fetch(`${server.url}/v1/generate`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}`, 'X-Request-Id': requestId },
    body: JSON.stringify(body),
  });
}

describe('request logs and traces (compiled server, tracing on)', () => {
  const receiver = new OtlpReceiver();
  let server: ServerProcess;
  beforeAll(async () => {
    await receiver.start();
    server = await startServer({ API_KEYS: KEY, LOG_LEVEL: 'info', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SERVICE_NAME: 'llm-api-test' });
    await waitForModel(server);
  });
  afterAll(async () => {
    await server.stop();
    await receiver.stop();
  });

  it('a request id round-trips into one JSON log line with route, status, latency, model, tokens, key id and trace id', async () => {
    const res = await generate(server, 'req-logs-0001', { prompt: 'Once upon a time', max_tokens: 10, temperature: 0 });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('req-logs-0001');
    const usage = ((await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
    await waitFor(() => completionLine(server, 'req-logs-0001') !== undefined, 5000, 'log line');
    const line = completionLine(server, 'req-logs-0001') as Record<string, unknown>;
    expect(line).toMatchObject({
      msg: 'request completed',
      route: '/v1/generate',
      status: 200,
      model: 'stories260K',
      tokens: { prompt: usage.prompt_tokens, cached: 0, completion: usage.completion_tokens },
      finish_reason: 'length',
      key_id: expect.stringMatching(/^(key_|static:)[0-9a-f]{12,16}$/),
      trace_id: expect.stringMatching(/^[0-9a-f]{32}$/),
      queue_ms: expect.any(Number),
    });
    expect(line.latency_ms).toEqual(expect.any(Number));
    expect(line.ttft_ms).toEqual(expect.any(Number));
    expect(line).not.toHaveProperty('prompt');
    expect(server.output()).not.toContain(KEY);
    expect(server.output()).not.toContain('Once upon a time');
  });

  it('replaces a missing or unsafe request id with a generated one', async () => {
    const res = await fetch(`${server.url}/v1/models`, { headers: { Authorization: `Bearer ${KEY}`, 'X-Request-Id': 'not ok; spaces' } });
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('exports spans for the HTTP request, auth, queue wait, prefill and decode in one trace over OTLP/HTTP', async () => {
    await generate(server, 'req-trace-0002', { prompt: 'The little dog', max_tokens: 12, ignore_eos: true });
    await waitFor(() => completionLine(server, 'req-trace-0002') !== undefined, 5000, 'log line');
    const traceId = completionLine(server, 'req-trace-0002')?.trace_id as string;
    const mine = (): OtlpSpan[] => receiver.spans.filter((s) => s.traceId === traceId);
    await waitFor(() => mine().some((s) => s.name === 'llm.decode') && mine().some((s) => s.name === 'POST /v1/generate'), 15_000, 'spans exported');
    expect([...receiver.contentTypes].join()).toContain('application/json');
    const spans = mine();
    const byName = (name: string): OtlpSpan => {
      const span = spans.find((s) => s.name === name);
      if (!span) throw new Error(`no span ${name} in ${spans.map((s) => s.name).join(', ')}`);
      return span;
    };
    const server_ = byName('POST /v1/generate');
    const auth = byName('auth');
    const generation = byName('llm.generation');
    const queue = byName('llm.queue_wait');
    const prefill = byName('llm.prefill');
    const decode = byName('llm.decode');
    expect(server_.parentSpanId ?? '').toBe('');
    expect(receiver.spans.find((s) => s.traceId === traceId)?.service).toBe('llm-api-test');
    for (const child of [queue, prefill, decode]) expect(child.parentSpanId).toBe(generation.spanId);
    const ids = new Set(spans.map((s) => s.spanId));
    expect(ids.has(auth.parentSpanId as string)).toBe(true);
    expect(ids.has(generation.parentSpanId as string)).toBe(true);
    // queue wait, then prefill, then decode, inside the generation (1 ms slack: the SDK anchors
    // each span's clock separately)
    const t = (s: OtlpSpan, edge: 'start' | 'end'): bigint => BigInt(edge === 'start' ? s.startTimeUnixNano : s.endTimeUnixNano);
    expect(t(queue, 'end') <= t(prefill, 'start') + 1_000_000n).toBe(true);
    expect(t(prefill, 'end') <= t(decode, 'start') + 1_000_000n).toBe(true);
    expect(t(decode, 'end') <= t(generation, 'end') + 1_000_000n).toBe(true);
    const completion = decode.attributes?.find((a) => a.key === 'llm.usage.completion_tokens')?.value;
    expect(Number(completion?.intValue)).toBe(12);
  });

  it('a key in the query string reaches neither the log line nor any exported span', async () => {
    const secret = 'sk-in-the-query-0123456789';
    const res = await fetch(`${server.url}/v1/models?api_key=${secret}&limit=3`, {
      headers: { Authorization: `Bearer ${KEY}`, 'X-Request-Id': 'req-query-0003' },
    });
    expect(res.status).toBe(200);
    await waitFor(() => completionLine(server, 'req-query-0003') !== undefined, 5000, 'log line');
    const traceId = completionLine(server, 'req-query-0003')?.trace_id as string;
    await waitFor(() => receiver.spans.some((s) => s.traceId === traceId && s.name === 'GET /v1/models'), 15_000, 'span exported');
    const span = receiver.spans.find((s) => s.traceId === traceId && s.name === 'GET /v1/models') as OtlpSpan;
    const query = span.attributes?.find((a) => a.key === 'url.query')?.value as { stringValue?: string } | undefined;
    expect(query?.stringValue).toBe('api_key=[redacted]&limit=3');
    expect(JSON.stringify(receiver.spans)).not.toContain(secret);
    expect(server.output()).not.toContain(secret);
  });

  it('keys by any other name, in the path or as X-Request-Id reach neither logs, spans nor echoed headers (issue 17)', async () => {
    const secret = 'sk-llm-QpRsTuVwXyZ0123456789abcdefghij';
    const urls = [
      `/v1/models?x-api-key=${secret}`,
      `/v1/models?bearer=${secret}`,
      `/v1/models?sk=${secret}`,
      `/v1/models?api_key[]=${secret}`,
      `/v1/models/${secret}`,
      `/v1/collections/${secret}/query`,
    ];
    const ids: string[] = [];
    for (const [i, url] of urls.entries()) {
      const id = `req-leak-${i}`;
      ids.push(id);
      const res = await fetch(`${server.url}${url}`, { headers: { Authorization: `Bearer ${KEY}`, 'X-Request-Id': id } });
      expect(res.headers.get('x-request-id')).toBe(id);
    }
    // The key itself, or another one, sent as the request id: replaced, never echoed or logged.
    for (const given of [KEY, secret]) {
      const res = await fetch(`${server.url}/v1/models`, { headers: { Authorization: `Bearer ${KEY}`, 'X-Request-Id': given } });
      const echoed = res.headers.get('x-request-id');
      expect(echoed).toMatch(/^[0-9a-f-]{36}$/);
      ids.push(echoed as string);
    }
    for (const id of ids) await waitFor(() => completionLine(server, id) !== undefined, 5000, 'log line');
    const traceIds = new Set(ids.map((id) => completionLine(server, id)?.trace_id as string));
    await waitFor(() => [...traceIds].every((tid) => receiver.spans.some((s) => s.traceId === tid)), 15_000, 'spans exported');
    expect(server.output()).not.toContain(secret);
    expect(server.output()).not.toContain(KEY);
    expect(JSON.stringify(receiver.spans)).not.toContain(secret);
    expect(JSON.stringify(receiver.spans)).not.toContain(KEY);
    expect(String(completionLine(server, 'req-leak-4')?.req && (completionLine(server, 'req-leak-4')?.req as { url: string }).url)).toBe('/v1/models/[redacted]');
  });

  it('neither logs nor traces probes and scrapes', async () => {
    for (const path of ['/health', '/health/ready', '/metrics']) expect((await fetch(`${server.url}${path}`)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1500));
    expect(logLines(server).some((l) => /^\/(health|metrics)/.test(String((l.req as { url?: string } | undefined)?.url)))).toBe(false);
    expect(receiver.spans.some((s) => /health|metrics/.test(s.name))).toBe(false);
  });
});

describe('LOG_PROMPTS=true (compiled server, tracing off)', () => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await startServer({ API_KEYS: KEY, LOG_LEVEL: 'info', LOG_PROMPTS: 'true' });
    await waitForModel(server);
  });
  afterAll(() => server.stop());

  it('puts the prompt in the request line, and no trace id', async () => {
    expect((await generate(server, 'req-prompt-0003', { prompt: 'A dragon named Sparky', max_tokens: 3 })).status).toBe(200);
    await waitFor(() => completionLine(server, 'req-prompt-0003') !== undefined, 5000, 'log line');
    const line = completionLine(server, 'req-prompt-0003') as Record<string, unknown>;
    expect(line.prompt).toBe('A dragon named Sparky');
    expect(line).not.toHaveProperty('trace_id');
    expect(server.output()).not.toContain(KEY);
  });
});
