import { Body, Controller, Get, HttpCode, Post } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import { RequireScopes } from '@app/auth';
import { CommonErrorCode, CommonException } from '@app/common';
import { InferenceService } from '@app/inference';
import { adminModelJson, budgetJson } from './model.view';
import { ModelActionDto } from './models.dto';

/**
 * The model registry over HTTP, for operators and `npm run cli -- model list|load|unload`:
 * every configured model with its state, memory estimate and use, the memory budget; load,
 * unload (once its in-flight requests are done) and a MODELS_DIR rescan. Needs `admin`.
 */
@ApiTags('admin')
@ApiSecurity('api-key')
@RequireScopes('admin')
@Controller('admin/models')
export class ModelsAdminController {
  constructor(private readonly inference: InferenceService) {}

  @Get()
  async list(): Promise<object> {
    return {
      object: 'list',
      default: this.inference.defaultModelId,
      embedding: this.inference.embeddingModelId,
      memory: budgetJson(await this.inference.memory()),
      data: this.inference.models().map(adminModelJson),
    };
  }

  /** `{"action": "load" | "unload", "model": "<id or alias>"}` or `{"action": "refresh"}`; answers when done. */
  @Post()
  @HttpCode(200)
  async act(@Body() dto: ModelActionDto): Promise<object> {
    if (dto.action === 'refresh') return { object: 'list', data: this.inference.refresh().map(adminModelJson) };
    if (!dto.model) throw new CommonException(CommonErrorCode.ValidationFailed, `${dto.action} needs a model (id or alias)`, { param: 'model' });
    const view = dto.action === 'load' ? await this.inference.load(dto.model) : await this.inference.unload(dto.model);
    return adminModelJson(view);
  }
}
