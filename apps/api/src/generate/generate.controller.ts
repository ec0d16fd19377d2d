import { Body, Controller, HttpCode, Post, Res } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { Caller, Principal } from '@app/auth';
import { ClientSignal, sendReply, writeSse } from '@app/common';
import { GenerateRequestDto } from './generate.dto';
import { GenerateService } from './generate.service';

@ApiTags('generate')
@ApiSecurity('api-key')
@Controller('v1/generate')
export class GenerateController {
  constructor(private readonly service: GenerateService) {}

  @Post()
  @HttpCode(200)
  async generate(
    @Body() dto: GenerateRequestDto,
    @ClientSignal() signal: AbortSignal,
    @Caller() caller: Principal | undefined,
    @Res() res: Response,
  ): Promise<void> {
    return sendReply(res, await this.service.generate(dto, signal, caller));
  }

  @Post('stream')
  @HttpCode(200)
  stream(
    @Body() dto: GenerateRequestDto,
    @ClientSignal() signal: AbortSignal,
    @Caller() caller: Principal | undefined,
    @Res() res: Response,
  ): Promise<void> {
    return writeSse(res, this.service.stream(dto, signal, caller), { encode: (e) => JSON.stringify(e) });
  }
}
