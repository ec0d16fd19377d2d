import { Body, Controller, HttpCode, Post } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import { Caller, Principal } from '@app/auth';
import { CommonErrorCode, CommonException } from '@app/common';
import { ModelAccessService } from '../models/model-access.service';
import { DetokenizeRequestDto, TokenizeRequestDto } from './tokenize.dto';

/**
 * A model's tokenizer, as llama-server and vLLM expose it: the request's `model` (id or alias;
 * none = the default model), with the key's model access. Keyed like the other routes (scope
 * `generate`, rate limits); not metered: no generation runs.
 */
@ApiTags('tokenizer')
@ApiSecurity('api-key')
@Controller()
export class TokenizeController {
  constructor(private readonly models: ModelAccessService) {}

  @Post('tokenize')
  @HttpCode(200)
  async tokenize(@Body() dto: TokenizeRequestDto, @Caller() caller: Principal | undefined): Promise<object> {
    if (dto.content !== undefined && dto.prompt !== undefined) {
      throw new CommonException(CommonErrorCode.ValidationFailed, 'send content or prompt, not both', { param: 'prompt', details: [{ field: 'prompt', message: 'send content or prompt, not both' }] });
    }
    const model = (await this.models.acquire(dto.model, caller, ['chat', 'embedding'])).handle;
    const text = (dto.content ?? dto.prompt) as string;
    const special = dto.parse_special !== false;
    let tokens = model.tokenize(text, { special });
    if (dto.add_special ?? dto.add_special_tokens ?? false) tokens = model.withSpecialTokens(tokens);
    const ids = dto.with_pieces ? model.tokenPieces(tokens, { special: true }).map((piece, i) => ({ id: tokens[i], piece })) : tokens;
    return { tokens: ids, count: tokens.length, max_model_len: model.descriptor.contextSize };
  }

  @Post('detokenize')
  @HttpCode(200)
  async detokenize(@Body() dto: DetokenizeRequestDto, @Caller() caller: Principal | undefined): Promise<object> {
    const model = (await this.models.acquire(dto.model, caller, ['chat', 'embedding'])).handle;
    const text = model.detokenize(dto.tokens, { special: true });
    // llama-server answers `content`, vLLM `prompt`: both, so either client reads its own.
    return { content: text, prompt: text };
  }
}
