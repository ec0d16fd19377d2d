import { Body, Controller, HttpCode, Post, Res } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { Caller, Principal } from '@app/auth';
import { CacheDirectivesParam } from '@app/caching';
import type { CacheDirectives } from '@app/caching';
import { ClientSignal, sendReply } from '@app/common';
import { Metered } from '@app/usage';
import { GenerateRequestDto } from './generate.dto';
import { GenerateService } from './generate.service';

@ApiTags('generate')
@ApiSecurity('api-key')
@Metered()
@Controller('v1/generate')
export class GenerateController {
  constructor(private readonly service: GenerateService) {}

  @Post()
  @HttpCode(200)
  async generate(
    @Body() dto: GenerateRequestDto,
    @CacheDirectivesParam() cache: CacheDirectives,
    @ClientSignal() signal: AbortSignal,
    @Caller() caller: Principal | undefined,
    @Res() res: Response,
  ): Promise<void> {
    return sendReply(res, await this.service.generate(dto, { directives: cache, signal, caller }));
  }

  @Post('stream')
  @HttpCode(200)
  async stream(
    @Body() dto: GenerateRequestDto,
    @CacheDirectivesParam() cache: CacheDirectives,
    @ClientSignal() signal: AbortSignal,
    @Caller() caller: Principal | undefined,
    @Res() res: Response,
  ): Promise<void> {
    return sendReply(res, await this.service.generate(dto, { directives: cache, signal, caller }, true));
  }
}
