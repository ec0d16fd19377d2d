import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsBoolean, IsInt, IsOptional, IsString, MaxLength, Min, MinLength, registerDecorator, ValidationArguments } from 'class-validator';
import { FieldPolicy } from '@app/common';
import { MAX_TEXT } from '../openai/openai.dto';

/** Most documents one request may rank (each is one model evaluation). */
export const MAX_RERANK_DOCUMENTS = 1000;

/** `documents`: strings, or `{text}` objects (Jina's and Cohere's other form). */
function IsDocuments(): PropertyDecorator {
  const text = (v: unknown): boolean => typeof v === 'string' && v.length <= MAX_TEXT;
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isRerankDocuments',
      target: object.constructor,
      propertyName: propertyName as string,
      validator: {
        validate: (value: unknown) =>
          Array.isArray(value) &&
          value.length > 0 &&
          value.length <= MAX_RERANK_DOCUMENTS &&
          value.every((d) => text(d) || (typeof d === 'object' && d !== null && text((d as { text?: unknown }).text))),
        defaultMessage: (args: ValidationArguments) =>
          `${args.property} must be an array of 1 to ${MAX_RERANK_DOCUMENTS} strings (or {"text": string} objects) of at most ${MAX_TEXT} characters`,
      },
    });
}

/** `POST /v1/rerank`: the Jina/Cohere shape llama-server serves. */
@FieldPolicy({})
export class RerankRequestDto {
  @ApiPropertyOptional({ description: 'The reranker\'s id (RERANK_MODEL_PATH\'s file name without .gguf); optional' })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  model?: string;

  @ApiProperty()
  @IsString()
  @MinLength(1)
  @MaxLength(MAX_TEXT)
  query!: string;

  @ApiProperty({ oneOf: [{ type: 'array', items: { type: 'string' } }, { type: 'array', items: { type: 'object' } }] })
  @IsDocuments()
  documents!: (string | { text: string })[];

  @ApiPropertyOptional({ minimum: 1, description: 'Return only the best n (default: all)' })
  @IsOptional()
  @IsInt()
  @Min(1)
  top_n?: number;

  @ApiPropertyOptional({ default: false, description: 'Put each document\'s text in its result' })
  @IsOptional()
  @IsBoolean()
  return_documents?: boolean;
}
