import { Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Principal } from '@app/auth';
import { InputGuardService, Reply } from '@app/common';
import { CacheDirectives, CachedRun, collectCompletion, ResponseCacheService } from '@app/caching';
import { GenerationRequest, InferenceService, toUsage } from '@app/inference';
import { cacheableRequest } from '../cache/cacheable';
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
    private readonly guard: InputGuardService,
  ) {}

  async generate(dto: GenerateRequestDto, directives: CacheDirectives, signal: AbortSignal, caller?: Principal): Promise<Reply> {
    const run = await this.#run(dto, directives, signal, caller);
    if (dto.stream) return this.#sse(run);
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
      },
    };
  }

  /** One event per chunk the model produces (or produced, on a hit), then `{"text":"","done":true,"usage":…}`. */
  async stream(dto: GenerateRequestDto, directives: CacheDirectives, signal: AbortSignal, caller?: Principal): Promise<Reply> {
    return this.#sse(await this.#run(dto, directives, signal, caller));
  }

  #sse(run: CachedRun): Reply {
    const events = run.events;
    return {
      kind: 'sse',
      headers: run.headers,
      events: (async function* () {
        for await (const event of events) {
          if (event.kind === 'text') yield { text: event.text, done: false };
          else yield { text: '', done: true, finish_reason: event.finishReason, usage: toUsage(event) };
        }
      })(),
    };
  }

  #run(dto: GenerateRequestDto, directives: CacheDirectives, signal: AbortSignal, caller?: Principal): Promise<CachedRun> {
    const request = this.#request(dto);
    return this.cache.run(cacheableRequest('generate', request, dto.prompt, dto.max_tokens), directives, () =>
      this.usage.meter(this.inference.generate(request, this.usage.submitOptions(caller, signal)), caller, request.prompt.promptTokens),
    );
  }

  #request(dto: GenerateRequestDto): GenerationRequest {
    this.guard.check([{ field: 'prompt', text: dto.prompt }]);
    return {
      prompt: this.inference.prepareText(dto.prompt, dto.max_tokens, 256),
      sampling: { temperature: dto.temperature, topP: dto.top_p, ignoreEos: dto.ignore_eos },
      stop: dto.stop_sequences,
    };
  }
}
