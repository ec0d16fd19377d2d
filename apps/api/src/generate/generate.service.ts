import { Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Reply } from '@app/common';
import { GenerationRequest, InferenceService, toUsage } from '@app/inference';
import { GenerateRequestDto } from './generate.dto';

/** The seed's `/v1/generate` API over the inference service. */
@Injectable()
export class GenerateService {
  constructor(private readonly inference: InferenceService) {}

  async generate(dto: GenerateRequestDto, signal: AbortSignal): Promise<Reply> {
    if (dto.stream) return { kind: 'sse', events: this.stream(dto, signal) };
    const request = this.#request(dto);
    const result = await this.inference.complete(request, { signal });
    return {
      kind: 'json',
      body: {
        id: `gen-${randomUUID()}`,
        text: result.text,
        model: this.inference.model.id,
        finish_reason: result.finishReason,
        usage: result.usage,
        created: Math.floor(Date.now() / 1000),
      },
    };
  }

  /** One event per chunk the model produces, then `{"text":"","done":true,"usage":…}`. */
  stream(dto: GenerateRequestDto, signal: AbortSignal): AsyncIterable<object> {
    const events = this.inference.generate(this.#request(dto), { signal });
    return (async function* () {
      for await (const event of events) {
        if (event.kind === 'text') yield { text: event.text, done: false };
        else yield { text: '', done: true, finish_reason: event.finishReason, usage: toUsage(event) };
      }
    })();
  }

  #request(dto: GenerateRequestDto): GenerationRequest {
    return {
      prompt: this.inference.prepareText(dto.prompt, dto.max_tokens, 256),
      sampling: { temperature: dto.temperature, topP: dto.top_p, ignoreEos: dto.ignore_eos },
      stop: dto.stop_sequences,
    };
  }
}
