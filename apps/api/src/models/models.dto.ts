import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsOptional, IsString, Length } from 'class-validator';

export const MODEL_ACTIONS = ['load', 'unload', 'refresh'] as const;
export type ModelAction = (typeof MODEL_ACTIONS)[number];

/** `POST /admin/models`: load or unload a model (by id or alias), or read MODELS_DIR again. */
export class ModelActionDto {
  @ApiProperty({ enum: MODEL_ACTIONS })
  @IsIn(MODEL_ACTIONS)
  action!: ModelAction;

  @ApiPropertyOptional({ description: 'Model id or alias (load and unload)' })
  @IsOptional()
  @IsString()
  @Length(1, 128)
  model?: string;
}
