import { Body, Controller, Get, HttpCode, Param, Post, Res } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { Caller, Principal } from '@app/auth';
import { ClientSignal, sendReply } from '@app/common';
import { Metered } from '@app/usage';
import { CacheDirectivesParam } from '@app/caching';
import type { CacheDirectives } from '@app/caching';
import { ChatCompletionRequestDto, CompletionRequestDto, EmbeddingRequestDto } from './openai.dto';
import { OpenAIService } from './openai.service';

@ApiTags('openai')
@ApiSecurity('api-key')
@Controller('v1')
export class OpenAIController {
  constructor(private readonly service: OpenAIService) {}

  @Get('models')
  models(@Caller() caller: Principal | undefined): object {
    return this.service.listModels(caller);
  }

  /** An id with a slash (`org/name`) is sent URL-encoded (`org%2Fname`), as the SDKs do. */
  @Get('models/:id')
  model(@Param('id') id: string, @Caller() caller: Principal | undefined): object {
    return this.service.getModel(id, caller);
  }

  @Post('completions')
  @Metered()
  @HttpCode(200)
  async completions(
    @Body() dto: CompletionRequestDto,
    @CacheDirectivesParam() cache: CacheDirectives,
    @ClientSignal() signal: AbortSignal,
    @Caller() caller: Principal | undefined,
    @Res() res: Response,
  ): Promise<void> {
    return sendReply(res, await this.service.completions(dto, { directives: cache, signal, caller }));
  }

  @Post('chat/completions')
  @Metered()
  @HttpCode(200)
  async chat(
    @Body() dto: ChatCompletionRequestDto,
    @CacheDirectivesParam() cache: CacheDirectives,
    @ClientSignal() signal: AbortSignal,
    @Caller() caller: Principal | undefined,
    @Res() res: Response,
  ): Promise<void> {
    return sendReply(res, await this.service.chat(dto, { directives: cache, signal, caller }));
  }

  @Post('embeddings')
  @Metered()
  @HttpCode(200)
  embeddings(@Body() dto: EmbeddingRequestDto, @Caller() caller: Principal | undefined): Promise<object> {
    return this.service.embeddings(dto, caller);
  }
}
