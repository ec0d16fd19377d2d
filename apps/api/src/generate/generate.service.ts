import { Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Principal } from '@app/auth';
import { InputGuardService, Reply } from '@app/common';
import { CacheDirectives, CachedRun, collectCompletion, ResponseCacheService } from '@app/caching';
import { GenerationRequest, InferenceService, toUsage } from '@app/inference';
import { RetrievalService, Source } from '@app/retrieval';
import { cacheableRequest } from '../cache/cacheable';
import { promptWithContext, retrieveFor } from '../retrieval/context.assembly';
import { UsageMeterService } from '../usage/usage-meter.service';
import { GenerateRequestDto } from './generate.dto';

/**
 * The seed's `/v1/generate` API over the inference service, through the response caches, at the
 * caller's priority and charged to the caller's token budget (cache hits cost no model tokens).
 */
@Injectable()
export class GenerateService {
  constructor(
    private readonly inference: InferenceService,
    private readonly cache: ResponseCacheService,
    private readonly usage: UsageMeterService,
    private readonly retrieval: RetrievalService,
    private readonly guard: InputGuardService,
  ) {}

  async generate(dto: GenerateRequestDto, directives: CacheDirectives, signal: AbortSignal, caller?: Principal): Promise<Reply> {
    const { run, sources } = await this.#run(dto, directives, signal, caller);
    if (dto.stream) return this.#sse(run, sources);
    const result = await collectCompletion(run.events);
    return {
      kind: 'json',
      headers: run.headers,
      body: {
        // A cached answer is a new response: fresh id and time, the model's text.
        id: `gen-${randomUUID()}`,
        text: result.text,
        model: this.inference.model.id,
        finish_reason: result.finishReason,
        usage: toUsage(result),
        created: Math.floor(Date.now() / 1000),
        ...(sources ? { sources } : {}),
      },
    };
  }

  /**
   * One event per chunk the model produces (or produced, on a hit), then
   * `{"text":"","done":true,"usage":…}` (with `sources` when the request used retrieval).
   */
  async stream(dto: GenerateRequestDto, directives: CacheDirectives, signal: AbortSignal, caller?: Principal): Promise<Reply> {
    const { run, sources } = await this.#run(dto, directives, signal, caller);
    return this.#sse(run, sources);
  }

  #sse(run: CachedRun, sources: readonly Source[] | undefined): Reply {
    const events = run.events;
    return {
      kind: 'sse',
      headers: run.headers,
      events: (async function* () {
        for await (const event of events) {
          if (event.kind === 'text') yield { text: event.text, done: false };
          else yield { text: '', done: true, finish_reason: event.finishReason, usage: toUsage(event), ...(sources ? { sources } : {}) };
        }
      })(),
    };
  }

  async #run(
    dto: GenerateRequestDto,
    directives: CacheDirectives,
    signal: AbortSignal,
    caller?: Principal,
  ): Promise<{ run: CachedRun; sources?: readonly Source[] }> {
    const retrieved = await retrieveFor(this.retrieval, dto.retrieval, dto.prompt, caller);
    const prompt = promptWithContext(dto.prompt, retrieved);
    const request = this.#request(dto, prompt);
    const run = await this.cache.run(cacheableRequest('generate', request, dto.prompt, dto.max_tokens, undefined, retrieved?.context), directives, () =>
      this.usage.meter(this.inference.generate(request, this.usage.submitOptions(caller, signal)), caller, request.prompt),
    );
    return { run, sources: retrieved?.sources };
  }

  #request(dto: GenerateRequestDto, prompt: string): GenerationRequest {
    // The client's own text is checked, not the retrieved context around it.
    this.guard.check([{ field: 'prompt', text: dto.prompt }]);
    return {
      prompt: this.inference.prepareText(prompt, dto.max_tokens, 256),
      sampling: { temperature: dto.temperature, topP: dto.top_p, ignoreEos: dto.ignore_eos },
      stop: dto.stop_sequences,
    };
  }
}
