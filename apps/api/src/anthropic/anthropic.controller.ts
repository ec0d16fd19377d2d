import { Body, Controller, HttpCode, Post, Res } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { Caller, Principal } from '@app/auth';
import { ClientSignal, sendReply } from '@app/common';
import { CacheDirectivesParam } from '@app/caching';
import type { CacheDirectives } from '@app/caching';
import { Metered } from '@app/usage';
import { AnthropicConversationDto, AnthropicMessagesDto } from './anthropic.dto';
import { AnthropicService } from './anthropic.service';

/**
 * Anthropic's Messages API. The key comes as `x-api-key` (or `Authorization: Bearer`);
 * `anthropic-version` and `anthropic-beta` are accepted and not needed. Errors on these routes
 * have Anthropic's shape (see anthropic.errors.ts).
 */
@ApiTags('anthropic')
@ApiSecurity('api-key')
@Controller('v1/messages')
export class AnthropicController {
  constructor(private readonly service: AnthropicService) {}

  @Post()
  @Metered()
  @HttpCode(200)
  async messages(
    @Body() dto: AnthropicMessagesDto,
    @CacheDirectivesParam() cache: CacheDirectives,
    @ClientSignal() signal: AbortSignal,
    @Caller() caller: Principal | undefined,
    @Res() res: Response,
  ): Promise<void> {
    return sendReply(res, await this.service.messages(dto, { directives: cache, signal, caller }));
  }

  @Post('count_tokens')
  @HttpCode(200)
  countTokens(@Body() dto: AnthropicConversationDto, @Caller() caller: Principal | undefined): Promise<object> {
    return this.service.countTokens(dto, caller);
  }
}
