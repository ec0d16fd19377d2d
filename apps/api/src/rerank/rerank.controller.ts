import { Body, Controller, HttpCode, Post } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import { Caller, Principal } from '@app/auth';
import { ClientSignal } from '@app/common';
import { Metered } from '@app/usage';
import { RerankRequestDto } from './rerank.dto';
import { RerankService } from './rerank.service';

/** Jina/Cohere-style reranking, at llama-server's paths. */
@ApiTags('rerank')
@ApiSecurity('api-key')
@Controller()
export class RerankController {
  constructor(private readonly service: RerankService) {}

  @Post(['v1/rerank', 'rerank'])
  @Metered()
  @HttpCode(200)
  rerank(@Body() dto: RerankRequestDto, @Caller() caller: Principal | undefined, @ClientSignal() signal: AbortSignal): Promise<object> {
    return this.service.rerank(dto, caller, signal);
  }
}
