import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { ArrayMaxSize, ArrayMinSize, IsArray, IsIn, IsInt, IsObject, IsOptional, IsString, Matches, Max, MaxLength, Min } from 'class-validator';
import { PRIORITY_CLASSES, SCOPES } from '@app/auth';
import type { PriorityClass, Scope } from '@app/auth';

const LIMIT_MAX = 2_147_483_647;
const BUDGET_MAX = 1e15;

/** Fields shared by create and update; absent = the default (create) or unchanged (update). */
export class KeySettingsDto {
  @ApiPropertyOptional({ enum: SCOPES, isArray: true, description: 'Default ["generate"]' })
  @IsOptional()
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(SCOPES.length)
  @IsIn(SCOPES, { each: true })
  scopes?: Scope[];

  @ApiPropertyOptional({ description: 'Requests per window; 0 = unlimited. Default KEY_DEFAULT_RPM' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(LIMIT_MAX)
  rpm?: number;

  @ApiPropertyOptional({ description: 'Prompt + completion tokens per window; 0 = unlimited. Default KEY_DEFAULT_TPM' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(LIMIT_MAX)
  tpm?: number;

  @ApiPropertyOptional({ description: 'Requests in flight at once; 0 = unlimited. Default KEY_DEFAULT_CONCURRENCY' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(LIMIT_MAX)
  concurrency?: number;

  @ApiPropertyOptional({ description: 'Token budget per UTC day; 0 = none (default)' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(BUDGET_MAX)
  budget_day?: number;

  @ApiPropertyOptional({ description: 'Token budget per UTC month; 0 = none (default)' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(BUDGET_MAX)
  budget_month?: number;

  @ApiPropertyOptional({ enum: Object.keys(PRIORITY_CLASSES), description: 'Default normal' })
  @IsOptional()
  @IsIn(Object.keys(PRIORITY_CLASSES))
  priority?: PriorityClass;

  @ApiPropertyOptional({ type: [String], nullable: true, description: 'Models (ids or aliases) the key may use; null = every model (default)' })
  @IsOptional()
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(256)
  @IsString({ each: true })
  @Matches(/^[A-Za-z0-9][\w.:@/+-]{0,127}$/, { each: true })
  models?: string[] | null;

  @ApiPropertyOptional({ description: 'Requests per window on given models: {"model": n}; 0 removes a model\'s limit' })
  @IsOptional()
  @IsObject()
  model_rpm?: Record<string, number>;

  @ApiPropertyOptional({ description: 'Prompt + completion tokens per window on given models: {"model": n}; 0 removes a model\'s limit' })
  @IsOptional()
  @IsObject()
  model_tpm?: Record<string, number>;

  @ApiPropertyOptional({ description: 'Duration (90m, 12h, 30d, 8w, 1y), ISO date, or "never"' })
  @IsOptional()
  @IsString()
  @MaxLength(64)
  expires?: string;
}

export class CreateKeyDto extends KeySettingsDto {
  @ApiProperty({ description: 'Label, unique among unrevoked keys (letters, digits, . _ @ -)' })
  @IsString()
  @MaxLength(64)
  name!: string;
}

export class UpdateKeyDto extends KeySettingsDto {}
