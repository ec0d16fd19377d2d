import { Body, Controller, Delete, Get, HttpCode, Param, Post, Query, Res } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { Caller, Principal } from '@app/auth';
import { ClientSignal, sendReply } from '@app/common';
import { CacheDirectivesParam } from '@app/caching';
import type { CacheDirectives } from '@app/caching';
import { Metered } from '@app/usage';
import { InputItemsQueryDto, ResponsesRequestDto } from './responses.dto';
import { ResponsesService } from './responses.service';

/** OpenAI's Responses API: create (JSON or SSE), and the caller's stored responses. */
@ApiTags('openai')
@ApiSecurity('api-key')
@Controller('v1/responses')
export class ResponsesController {
  constructor(private readonly service: ResponsesService) {}

  @Post()
  @Metered()
  @HttpCode(200)
  async create(
    @Body() dto: ResponsesRequestDto,
    @CacheDirectivesParam() cache: CacheDirectives,
    @ClientSignal() signal: AbortSignal,
    @Caller() caller: Principal | undefined,
    @Res() res: Response,
  ): Promise<void> {
    return sendReply(res, await this.service.create(dto, { directives: cache, signal, caller }));
  }

  @Get(':id')
  get(@Param('id') id: string, @Caller() caller: Principal | undefined): Promise<object> {
    return this.service.get(id, { caller });
  }

  @Delete(':id')
  delete(@Param('id') id: string, @Caller() caller: Principal | undefined): Promise<object> {
    return this.service.delete(id, { caller });
  }

  @Get(':id/input_items')
  inputItems(@Param('id') id: string, @Query() query: InputItemsQueryDto, @Caller() caller: Principal | undefined): Promise<object> {
    return this.service.inputItems(id, query, { caller });
  }
}
