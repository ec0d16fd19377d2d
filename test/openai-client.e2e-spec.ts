import OpenAI from 'openai';
import { startTestApp, TestApp } from './support/test-app';

/** The official `openai` npm client as a real client against the running app. */
describe('OpenAI SDK compatibility', () => {
  let t: TestApp;
  let client: OpenAI;
  let model: string;
  beforeAll(async () => {
    t = await startTestApp();
    client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: t.key, maxRetries: 0 });
    model = (await client.models.list()).data[0].id;
  });
  afterAll(() => t.close());

  it('lists and retrieves the served model', async () => {
    expect(model).toBe('stories260K');
    expect((await client.models.retrieve(model)).id).toBe(model);
  });

  it('completions, not streamed', async () => {
    const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 16, temperature: 0 });
    expect(r.object).toBe('text_completion');
    expect(r.choices[0].text.length).toBeGreaterThan(5);
    expect(r.choices[0].finish_reason).toBe('length');
    expect(r.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 16, total_tokens: 21 });
  });

  it('completions, streamed: same text as not streamed at temperature 0, several chunks, usage', async () => {
    const whole = await client.completions.create({ model, prompt: 'The little dog', max_tokens: 24, temperature: 0 });
    const stream = await client.completions.create({
      model,
      prompt: 'The little dog',
      max_tokens: 24,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let chunks = 0;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      if (chunk.choices.length) {
        text += chunk.choices[0].text;
        chunks++;
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(chunks).toBeGreaterThan(2);
    expect(text).toBe(whole.choices[0].text);
    expect(finish).toBe('length');
    expect(usage).toMatchObject({ prompt_tokens: whole.usage?.prompt_tokens, completion_tokens: 24, total_tokens: whole.usage?.total_tokens });
  });

  it('chat completions, not streamed', async () => {
    const r = await client.chat.completions.create({
      model,
      messages: [
        { role: 'system', content: 'You tell stories.' },
        { role: 'user', content: 'Tell me about a cat.' },
      ],
      max_tokens: 20,
      temperature: 0,
    });
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0].message.role).toBe('assistant');
    expect(r.choices[0].message.content?.length).toBeGreaterThan(0);
    expect(['stop', 'length']).toContain(r.choices[0].finish_reason);
    expect(r.usage?.completion_tokens).toBeGreaterThan(0);
  });

  it('chat completions, streamed: same text, role first, [DONE] handled by the SDK', async () => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Once upon a time' }];
    const whole = await client.chat.completions.create({ model, messages, max_tokens: 20, temperature: 0 });
    const stream = await client.chat.completions.create({ model, messages, max_tokens: 20, temperature: 0, stream: true });
    let text = '';
    let chunks = 0;
    let role: string | undefined;
    let finish: string | null = null;
    for await (const chunk of stream) {
      role ??= chunk.choices[0]?.delta.role;
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      chunks++;
    }
    expect(role).toBe('assistant');
    expect(chunks).toBeGreaterThan(2);
    expect(text).toBe(whole.choices[0].message.content);
    expect(finish).toBe(whole.choices[0].finish_reason);
  });

  it('max_tokens ends with finish_reason length; a stop string with stop', async () => {
    const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 60, temperature: 0, stop: ['Lily'] });
    expect(r.choices[0].text).toMatch(/^, there was a little girl named ?$/);
    expect(r.choices[0].finish_reason).toBe('stop');
  });

  it('embeddings: float and the SDK default (base64) decode to the same vector', async () => {
    const asFloat = await client.embeddings.create({ model, input: ['hello world', 'a cat'], encoding_format: 'float' });
    const asDefault = await client.embeddings.create({ model, input: ['hello world', 'a cat'] });
    expect(asFloat.data).toHaveLength(2);
    expect(asFloat.data[0].embedding).toHaveLength(64);
    expect(asDefault.data[0].embedding).toHaveLength(64);
    asFloat.data[0].embedding.forEach((v, i) => expect(asDefault.data[0].embedding[i]).toBeCloseTo(v, 5));
    expect(asFloat.usage.prompt_tokens).toBeGreaterThan(2);
  });

  it('errors arrive as typed SDK errors', async () => {
    const bad = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
    await expect(bad.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    await expect(client.completions.create({ model, prompt: 'x', max_tokens: 100_000 })).rejects.toMatchObject({
      status: 400,
      code: 'context_length_exceeded',
    });
    await expect(client.completions.create({ model: 'gpt-4', prompt: 'x' })).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });
});
