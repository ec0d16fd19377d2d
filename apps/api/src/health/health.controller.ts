import { Controller, Get } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import { Public } from '@app/auth';
import { InferenceService } from '@app/inference';

@ApiTags('health')
@Public()
@Controller('health')
export class HealthController {
  constructor(private readonly inference: InferenceService) {}

  /** The seed's health route: always 200 while the process serves HTTP. */
  @Get()
  health(): object {
    const state = this.inference.state;
    return {
      status: state === 'ready' ? 'healthy' : state === 'loading' ? 'loading' : 'unhealthy',
      model_loaded: state === 'ready',
      timestamp: new Date().toISOString(),
    };
  }
}
