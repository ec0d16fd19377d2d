import { Body, Controller, HttpCode, Post } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import { InferenceService } from '@app/inference';
import { CommonErrorCode, CommonException } from '@app/common';
import { DetokenizeRequestDto, TokenizeRequestDto } from './tokenize.dto';

/**
 * The served model's tokenizer, as llama-server and vLLM expose it. Keyed like the other routes
 * (scope `generate`, rate limits); not metered: no model runs.
 */
@ApiTags('tokenizer')
@ApiSecurity('api-key')
@Controller()
export class TokenizeController {
  constructor(private readonly inference: InferenceService) {}

  @Post('tokenize')
  @HttpCode(200)
  tokenize(@Body() dto: TokenizeRequestDto): object {
    this.inference.assertModel(dto.model);
    if (dto.content !== undefined && dto.prompt !== undefined) {
      throw new CommonException(CommonErrorCode.ValidationFailed, 'send content or prompt, not both', { param: 'prompt', details: [{ field: 'prompt', message: 'send content or prompt, not both' }] });
    }
    const text = (dto.content ?? dto.prompt) as string;
    const special = dto.parse_special !== false;
    let tokens = this.inference.tokenize(text, { special });
    if (dto.add_special ?? dto.add_special_tokens ?? false) tokens = this.inference.withSpecialTokens(tokens);
    const ids = dto.with_pieces ? this.inference.tokenPieces(tokens, { special: true }).map((piece, i) => ({ id: tokens[i], piece })) : tokens;
    return { tokens: ids, count: tokens.length, max_model_len: this.inference.model.contextSize };
  }

  @Post('detokenize')
  @HttpCode(200)
  detokenize(@Body() dto: DetokenizeRequestDto): object {
    this.inference.assertModel(dto.model);
    const text = this.inference.detokenize(dto.tokens, { special: true });
    // llama-server answers `content`, vLLM `prompt`: both, so either client reads its own.
    return { content: text, prompt: text };
  }
}
