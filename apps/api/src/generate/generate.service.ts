import { Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Principal } from '@app/auth';
import { Reply } from '@app/common';
import { GenerationRequest, InferenceService, toUsage } from '@app/inference';
import { UsageMeterService } from '../usage/usage-meter.service';
import { GenerateRequestDto } from './generate.dto';

/** The seed's `/v1/generate` API over the inference service. */
@Injectable()
export class GenerateService {
  constructor(
    private readonly inference: InferenceService,
    private readonly usage: UsageMeterService,
  ) {}

  async generate(dto: GenerateRequestDto, signal: AbortSignal, caller?: Principal): Promise<Reply> {
    if (dto.stream) return { kind: 'sse', events: this.stream(dto, signal, caller) };
    const request = this.#request(dto);
    const result = await this.inference.complete(request, this.usage.submitOptions(caller, signal));
    await this.usage.charge(caller, result.usage);
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
  stream(dto: GenerateRequestDto, signal: AbortSignal, caller?: Principal): AsyncIterable<object> {
    const request = this.#request(dto);
    const events = this.usage.meter(
      this.inference.generate(request, this.usage.submitOptions(caller, signal)),
      caller,
      request.prompt.promptTokens,
    );
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
