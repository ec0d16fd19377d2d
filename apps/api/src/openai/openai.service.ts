import { Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Principal } from '@app/auth';
import { asArray, InputGuardService, Reply } from '@app/common';
import { SamplingParams } from '@app/batching';
import { ChatMessage, GenerationRequest, InferenceService, PreparedPrompt, toUsage, Usage } from '@app/inference';
import { CacheDirectives, collectCompletion, ResponseCacheService } from '@app/caching';
import { RetrievalService } from '@app/retrieval';
import { cacheableRequest } from '../cache/cacheable';
import { lastUserMessage, messagesWithContext, promptWithContext, retrieveFor } from '../retrieval/context.assembly';
import { UsageMeterService } from '../usage/usage-meter.service';
import { ChatCompletionRequestDto, CompletionRequestDto, EmbeddingRequestDto, SamplingDto } from './openai.dto';

type Finish = 'stop' | 'length';

/**
 * OpenAI's wire format over the inference service, so the official SDKs work unchanged; through
 * the response caches, at the caller's priority, charged to the caller's token budget.
 */
@Injectable()
export class OpenAIService {
  constructor(
    private readonly inference: InferenceService,
    private readonly cache: ResponseCacheService,
    private readonly usage: UsageMeterService,
    private readonly retrieval: RetrievalService,
    private readonly guard: InputGuardService,
  ) {}

  listModels(): object {
    const m = this.inference.model;
    return { object: 'list', data: [this.#model(m.id)] };
  }

  getModel(id: string): object {
    this.inference.assertModel(id);
    return this.#model(this.inference.model.id);
  }

  async completions(dto: CompletionRequestDto, directives: CacheDirectives, signal: AbortSignal, caller?: Principal): Promise<Reply> {
    this.inference.assertModel(dto.model);
    const text = asArray(dto.prompt)[0];
    // The client's own text is checked, not the retrieved context around it.
    this.guard.check([{ field: 'prompt', text }]);
    const retrieved = await retrieveFor(this.retrieval, dto.retrieval, text, caller);
    const sources = retrieved ? { sources: retrieved.sources } : {};
    const prompt = this.inference.prepareText(promptWithContext(text, retrieved), dto.max_tokens, 16);
    const request = this.#request(dto, prompt);
    const cacheable = cacheableRequest('completions', request, text, dto.max_tokens, undefined, retrieved?.context);
    const run = await this.cache.run(cacheable, directives, () =>
      this.#generate(request, signal, caller),
    );
    // A cached answer is a new response: fresh id and created time.
    const meta = { id: `cmpl-${randomUUID()}`, created: Math.floor(Date.now() / 1000), model: this.inference.model.id };
    if (dto.stream) {
      const events = run.events;
      const includeUsage = dto.stream_options?.include_usage === true;
      const chunk = (text: string, finish: Finish | null): object => ({
        ...meta,
        object: 'text_completion',
        choices: [{ index: 0, text, logprobs: null, finish_reason: finish }],
        ...(includeUsage ? { usage: null } : {}),
      });
      return {
        kind: 'sse',
        terminator: '[DONE]',
        headers: run.headers,
        events: (async function* () {
          for await (const e of events) {
            if (e.kind === 'text') yield chunk(e.text, null);
            else {
              yield chunk('', finish(e.finishReason));
              if (includeUsage) yield { ...meta, object: 'text_completion', choices: [], usage: toUsage(e) };
              // Shaped like the usage chunk (no choices), so SDK stream readers pass over it.
              if (retrieved) yield { ...meta, object: 'text_completion', choices: [], ...sources };
            }
          }
        })(),
      };
    }
    const r = await collectCompletion(run.events);
    return {
      kind: 'json',
      headers: run.headers,
      body: {
        ...meta,
        object: 'text_completion',
        choices: [{ index: 0, text: r.text, logprobs: null, finish_reason: finish(r.finishReason) }],
        usage: this.#usage(toUsage(r), r.cachedPromptTokens),
        ...sources,
      },
    };
  }

  async chat(dto: ChatCompletionRequestDto, directives: CacheDirectives, signal: AbortSignal, caller?: Principal): Promise<Reply> {
    this.inference.assertModel(dto.model);
    const asked: ChatMessage[] = dto.messages.map((m) => ({
      role: m.role,
      content: typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join(''),
    }));
    this.guard.check(asked.map((m, i) => ({ field: `messages[${i}].content`, text: m.content })));
    const retrieved = await retrieveFor(this.retrieval, dto.retrieval, lastUserMessage(asked), caller);
    const sources = retrieved ? { sources: retrieved.sources } : {};
    const messages = messagesWithContext(asked, retrieved);
    const requestedMax = dto.max_completion_tokens ?? dto.max_tokens;
    const prompt = this.inference.prepareChat(messages, requestedMax);
    const request = this.#request(dto, prompt);
    const format = dto.response_format && dto.response_format.type !== 'text' ? dto.response_format : undefined;
    if (format) {
      request.sampling.constraint = await this.inference.constraintFor(
        format.type === 'json_object' ? 'json' : (format.json_schema as { schema: object }).schema,
      );
    }
    // The semantic cache compares whole conversations, roles included.
    const conversation = asked.map((m) => `${m.role}: ${m.content}`).join('\n');
    const cacheable = cacheableRequest('chat', request, conversation, requestedMax, format && JSON.stringify(format), retrieved?.context);
    const run = await this.cache.run(cacheable, directives, () => this.#generate(request, signal, caller));
    const meta = { id: `chatcmpl-${randomUUID()}`, created: Math.floor(Date.now() / 1000), model: this.inference.model.id };
    if (dto.stream) {
      const events = run.events;
      const includeUsage = dto.stream_options?.include_usage === true;
      const chunk = (delta: object, finish: Finish | null): object => ({
        ...meta,
        object: 'chat.completion.chunk',
        system_fingerprint: null,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
        ...(includeUsage ? { usage: null } : {}),
      });
      return {
        kind: 'sse',
        terminator: '[DONE]',
        headers: run.headers,
        events: (async function* () {
          let first = true;
          for await (const e of events) {
            if (e.kind === 'text') {
              yield chunk(first ? { role: 'assistant', content: e.text } : { content: e.text }, null);
              first = false;
            } else {
              yield chunk(first ? { role: 'assistant', content: '' } : {}, finish(e.finishReason));
              if (includeUsage) {
                yield { ...meta, object: 'chat.completion.chunk', system_fingerprint: null, choices: [], usage: toUsage(e) };
              }
              if (retrieved) yield { ...meta, object: 'chat.completion.chunk', system_fingerprint: null, choices: [], ...sources };
            }
          }
        })(),
      };
    }
    const r = await collectCompletion(run.events);
    return {
      kind: 'json',
      headers: run.headers,
      body: {
        ...meta,
        object: 'chat.completion',
        system_fingerprint: null,
        choices: [
          { index: 0, message: { role: 'assistant', content: r.text }, logprobs: null, finish_reason: finish(r.finishReason) },
        ],
        usage: this.#usage(toUsage(r), r.cachedPromptTokens),
        ...sources,
      },
    };
  }

  /** Embeddings are charged in tokens like generations: reserved at admission, settled to the count. */
  async embeddings(dto: EmbeddingRequestDto, caller?: Principal): Promise<object> {
    this.inference.assertModel(dto.model);
    const texts = asArray(dto.input);
    // Each input as the embedding model sees it, plus its begin/end tokens: an upper bound.
    const reservation = await this.usage.reserve(caller, texts.reduce((n, t) => n + this.inference.tokenize(t).length + 2, 0));
    let result: Awaited<ReturnType<InferenceService['embed']>>;
    try {
      result = await this.inference.embed(texts);
    } catch (err) {
      await reservation.release();
      throw err;
    }
    await reservation.settle(result.promptTokens);
    const { vectors, promptTokens } = result;
    const base64 = dto.encoding_format === 'base64';
    return {
      object: 'list',
      model: this.inference.model.id,
      data: vectors.map((v, index) => ({
        object: 'embedding',
        index,
        // base64 is little-endian float32, which is what the official SDKs decode by default.
        embedding: base64 ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') : Array.from(v),
      })),
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
    };
  }

  #generate(request: GenerationRequest, signal: AbortSignal, caller?: Principal) {
    const events = this.inference.generate(request, this.usage.submitOptions(caller, signal));
    return this.usage.meter(events, caller, request.prompt);
  }

  #request(dto: SamplingDto, prompt: PreparedPrompt): GenerationRequest {
    const sampling: SamplingParams = {
      temperature: dto.temperature ?? 1,
      topP: dto.top_p,
      topK: dto.top_k,
      minP: dto.min_p,
      seed: dto.seed,
      repeatPenalty: dto.repeat_penalty,
      presencePenalty: dto.presence_penalty,
      frequencyPenalty: dto.frequency_penalty,
      ignoreEos: dto.ignore_eos,
    };
    return { prompt, sampling, stop: asArray(dto.stop) };
  }

  #usage(usage: Usage, cached: number): object {
    return { ...usage, prompt_tokens_details: { cached_tokens: cached } };
  }

  #model(id: string): object {
    const m = this.inference.model;
    return {
      id,
      object: 'model',
      created: Math.floor(Date.now() / 1000),
      owned_by: 'local',
      meta: { context_size: m.contextSize, train_context_size: m.trainContextSize, vocab_size: m.vocabularySize, size_bytes: m.sizeBytes },
    };
  }
}

function finish(reason: string): Finish {
  return reason === 'length' ? 'length' : 'stop';
}
