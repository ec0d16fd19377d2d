import { ApiPropertyOptional } from '@nestjs/swagger';
import { ArrayMaxSize, IsArray, IsBoolean, IsInt, IsOptional, IsString, MaxLength, Min, ValidateIf } from 'class-validator';
import { FieldPolicy } from '@app/common';

/** Longest text one tokenize request may hold (the body limit usually bounds it first). */
export const MAX_TOKENIZE_CHARS = 4_000_000;

/** `POST /tokenize`: llama-server's shape (`content`, `add_special`, `parse_special`, `with_pieces`) and vLLM's (`prompt`, `add_special_tokens`). */
@FieldPolicy({})
export class TokenizeRequestDto {
  @ApiPropertyOptional({ description: 'Served model id (optional)' })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  model?: string;

  @ApiPropertyOptional({ description: 'The text (llama-server); or send prompt' })
  @ValidateIf((d: TokenizeRequestDto) => d.prompt === undefined || d.content !== undefined)
  @IsString({ message: 'content (or prompt) must be a string' })
  @MaxLength(MAX_TOKENIZE_CHARS)
  content?: string;

  @ApiPropertyOptional({ description: 'The text (vLLM)' })
  @IsOptional()
  @IsString()
  @MaxLength(MAX_TOKENIZE_CHARS)
  prompt?: string;

  @ApiPropertyOptional({ default: false, description: 'Add BOS (as generation does)' })
  @IsOptional()
  @IsBoolean()
  add_special?: boolean;

  @ApiPropertyOptional({ description: 'vLLM\'s name for add_special' })
  @IsOptional()
  @IsBoolean()
  add_special_tokens?: boolean;

  @ApiPropertyOptional({ default: true, description: 'Text of control tokens (`<s>`, `<|im_end|>`) becomes those tokens' })
  @IsOptional()
  @IsBoolean()
  parse_special?: boolean;

  @ApiPropertyOptional({ default: false, description: 'Return {id, piece} per token' })
  @IsOptional()
  @IsBoolean()
  with_pieces?: boolean;
}

/** `POST /detokenize`: token ids back to text (control tokens as their text). */
@FieldPolicy({})
export class DetokenizeRequestDto {
  @IsOptional()
  @IsString()
  @MaxLength(256)
  model?: string;

  @IsArray()
  @ArrayMaxSize(1_048_576)
  @IsInt({ each: true })
  @Min(0, { each: true })
  tokens!: number[];
}
