import { Controller, Get } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import { ProbeRoute } from '@app/auth';
import { HealthService } from './health.service';

@ApiTags('health')
@ProbeRoute('health')
@Controller('health')
export class HealthController {
  constructor(private readonly service: HealthService) {}

  /** The seed's health route: always 200 while the process serves HTTP. */
  @Get()
  health(): object {
    return this.service.summary();
  }

  /** Liveness: 503 only when the process should be restarted (the model failed to load). */
  @Get('live')
  live(): Promise<object> {
    return this.service.live();
  }

  /** Readiness: 503 while loading, while draining, or while a configured dependency is down. */
  @Get('ready')
  ready(): Promise<object> {
    return this.service.ready();
  }

  /** Startup: 503 until the model has loaded. */
  @Get('startup')
  startup(): Promise<object> {
    return this.service.startup();
  }
}
