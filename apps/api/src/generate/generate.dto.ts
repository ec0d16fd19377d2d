import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { ArrayMaxSize, IsArray, IsBoolean, IsInt, IsNumber, IsObject, IsOptional, IsString, Length, Max, MaxLength, Min, MinLength, ValidateNested } from 'class-validator';
import { RetrievalOptionDto } from '../retrieval/retrieval.dto';

/** The seed's request contract (chapter 23.1.2), bounds included. */
export class GenerateRequestDto {
  @ApiPropertyOptional({ description: 'Extension: model id or alias (see GET /v1/models); default the default model' })
  @IsOptional()
  @IsString()
  @Length(1, 128)
  model?: string;

  @ApiProperty({ minLength: 1, maxLength: 4096 })
  @IsString()
  @Length(1, 4096)
  prompt!: string;

  @ApiPropertyOptional({ minimum: 1, maximum: 2048, default: 256 })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(2048)
  max_tokens: number = 256;

  @ApiPropertyOptional({ minimum: 0, maximum: 2, default: 0.7 })
  @IsOptional()
  @IsNumber({ allowNaN: false, allowInfinity: false })
  @Min(0)
  @Max(2)
  temperature: number = 0.7;

  @ApiPropertyOptional({ minimum: 0, maximum: 1, default: 0.9 })
  @IsOptional()
  @IsNumber({ allowNaN: false, allowInfinity: false })
  @Min(0)
  @Max(1)
  top_p: number = 0.9;

  @ApiPropertyOptional({ type: [String], maxItems: 16 })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(16)
  @IsString({ each: true })
  @MinLength(1, { each: true })
  @MaxLength(256, { each: true })
  stop_sequences?: string[];

  @ApiPropertyOptional({ default: false })
  @IsOptional()
  @IsBoolean()
  stream: boolean = false;

  @ApiPropertyOptional({ default: false, description: 'Extension: generate until max_tokens even past end-of-text' })
  @IsOptional()
  @IsBoolean()
  ignore_eos: boolean = false;

  @ApiPropertyOptional({ type: () => RetrievalOptionDto, description: 'Ground the answer in a collection: its best chunks go into the prompt; the response lists them as sources' })
  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => RetrievalOptionDto)
  retrieval?: RetrievalOptionDto;
}
