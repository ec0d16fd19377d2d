import { Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Reply } from '@app/common';
import { ModelAccessService } from '../models/model-access.service';
import { GenerationContext, GenerationPipeline } from '../generation/generation.pipeline';
import { SeedPresenter } from '../generation/presenters/seed.presenter';
import { promptWithContext } from '../retrieval/context.assembly';
import { GenerateRequestDto } from './generate.dto';

/**
 * The seed's `/v1/generate` API on the generation pipeline: through the response caches, at the
 * caller's priority and charged to the caller's token budget (cache hits cost no model tokens).
 */
@Injectable()
export class GenerateService {
  constructor(
    private readonly models: ModelAccessService,
    private readonly pipeline: GenerationPipeline,
  ) {}

  /** JSON, or with `stream` (or on /stream) the SSE events of SeedPresenter; on `model` (id or alias) or the default model. */
  async generate(dto: GenerateRequestDto, context: Omit<GenerationContext, 'stream'>, stream = dto.stream): Promise<Reply> {
    const routed = await this.models.acquire(dto.model, context.caller, 'chat');
    const model = routed.handle;
    return this.pipeline.run(
      {
        model: routed,
        family: 'generate',
        guard: [{ field: 'prompt', text: dto.prompt }],
        retrieval: dto.retrieval ? { option: dto.retrieval, query: dto.prompt } : undefined,
        prepare: (retrieved) => ({
          prompts: [{ prompt: model.prepareText(promptWithContext(dto.prompt, retrieved), dto.max_tokens, 256), cacheText: dto.prompt }],
          sampling: { temperature: dto.temperature, topP: dto.top_p, ignoreEos: dto.ignore_eos },
          stop: dto.stop_sequences ?? [],
          requestedMaxTokens: dto.max_tokens,
        }),
      },
      { ...context, stream },
      new SeedPresenter(`gen-${randomUUID()}`, model.id),
    );
  }
}
