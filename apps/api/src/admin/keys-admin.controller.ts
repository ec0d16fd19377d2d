import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import { ApiKeysService, issuedJson, keyJson, parseExpiry, RequireScopes } from '@app/auth';
import type { UpdateKeyOptions } from '@app/auth';
import { KeySettingsDto, CreateKeyDto, UpdateKeyDto } from './admin.dto';

function options(dto: KeySettingsDto): UpdateKeyOptions {
  return {
    scopes: dto.scopes,
    rpm: dto.rpm,
    tpm: dto.tpm,
    concurrency: dto.concurrency,
    budgetDay: dto.budget_day,
    budgetMonth: dto.budget_month,
    priority: dto.priority,
    expiresAt: dto.expires === undefined ? undefined : parseExpiry(dto.expires),
    models: dto.models,
    modelRpm: dto.model_rpm,
    modelTpm: dto.model_tpm,
  };
}

/**
 * Key management over HTTP (the web console), the same operations as the CLI's `keys` commands.
 * Keys are addressed by id (`key_…`) or name. Secrets appear only in the answers of create and
 * rotate. Needs the `admin` scope.
 */
@ApiTags('admin')
@ApiSecurity('api-key')
@RequireScopes('admin')
@Controller('admin/keys')
export class KeysAdminController {
  constructor(private readonly keys: ApiKeysService) {}

  @Get()
  async list(): Promise<object> {
    return { object: 'list', data: (await this.keys.list()).map(keyJson) };
  }

  @Post()
  async create(@Body() dto: CreateKeyDto): Promise<object> {
    return issuedJson(await this.keys.create({ name: dto.name, ...options(dto) }));
  }

  @Get(':ref')
  async get(@Param('ref') ref: string): Promise<object> {
    return keyJson(await this.keys.resolve(ref));
  }

  @Patch(':ref')
  async update(@Param('ref') ref: string, @Body() dto: UpdateKeyDto): Promise<object> {
    return keyJson(await this.keys.update(ref, options(dto)));
  }

  @Post(':ref/rotate')
  @HttpCode(200)
  async rotate(@Param('ref') ref: string): Promise<object> {
    return issuedJson(await this.keys.rotate(ref));
  }

  /** Revokes (idempotent): the key stays listed as revoked. */
  @Delete(':ref')
  async revoke(@Param('ref') ref: string): Promise<object> {
    const { record, alreadyRevoked } = await this.keys.revoke(ref);
    return { ...keyJson(record), already_revoked: alreadyRevoked };
  }
}
