import { Controller, Get, Res } from '@nestjs/common';
import { ApiOkResponse, ApiProduces, ApiTags } from '@nestjs/swagger';
import { PrometheusController } from '@willsoto/nestjs-prometheus';
import type { Response } from 'express';
import { ProbeRoute } from '@app/auth';
import { MetricsService } from '@app/observability';

/** `GET /metrics` in the Prometheus text format; open unless METRICS_PUBLIC=false (then it needs an admin key). */
@ApiTags('observability')
@ProbeRoute('metrics')
@Controller()
export class MetricsController extends PrometheusController {
  constructor(private readonly metrics: MetricsService) {
    super();
  }

  @Get()
  @ApiProduces('text/plain')
  @ApiOkResponse({ description: 'Prometheus text exposition format', schema: { type: 'string' } })
  override async index(@Res({ passthrough: true }) response: Response): Promise<string> {
    await this.metrics.refresh();
    return super.index(response);
  }
}
