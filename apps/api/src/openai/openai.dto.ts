import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
  Equals,
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsNumber,
  IsObject,
  IsOptional,
  IsString,
  Max,
  MaxLength,
  Min,
  ValidateIf,
  ValidateNested,
  registerDecorator,
  ValidationArguments,
} from 'class-validator';
import { FreeFormFields, IsStringOrStringArray } from '@app/common';
import { RetrievalOptionDto } from '../retrieval/retrieval.dto';

const FINITE = { allowNaN: false, allowInfinity: false };
/** Longest prompt or message text accepted, in characters (the context decides the rest). */
export const MAX_TEXT = 200_000;

export class StreamOptionsDto {
  @IsOptional()
  @IsBoolean()
  include_usage?: boolean;
}

/** Sampling fields shared by completions and chat (OpenAI's, plus llama.cpp-style extras). */
export class SamplingDto {
  @ApiPropertyOptional({ description: 'Served model id (see GET /v1/models)' })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  model?: string;

  @ApiPropertyOptional({ minimum: 0, maximum: 2, default: 1 })
  @IsOptional()
  @IsNumber(FINITE)
  @Min(0)
  @Max(2)
  temperature?: number;

  @ApiPropertyOptional({ minimum: 0, maximum: 1, default: 1 })
  @IsOptional()
  @IsNumber(FINITE)
  @Min(0)
  @Max(1)
  top_p?: number;

  @ApiPropertyOptional({ minimum: 0, maximum: 1000, description: 'llama.cpp extension; 0 = off' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(1000)
  top_k?: number;

  @ApiPropertyOptional({ minimum: 0, maximum: 1, description: 'llama.cpp extension' })
  @IsOptional()
  @IsNumber(FINITE)
  @Min(0)
  @Max(1)
  min_p?: number;

  @ApiPropertyOptional({ minimum: 0, maximum: 4, description: 'llama.cpp extension; 1 = off' })
  @IsOptional()
  @IsNumber(FINITE)
  @Min(0)
  @Max(4)
  repeat_penalty?: number;

  @IsOptional()
  @IsNumber(FINITE)
  @Min(-2)
  @Max(2)
  presence_penalty?: number;

  @IsOptional()
  @IsNumber(FINITE)
  @Min(-2)
  @Max(2)
  frequency_penalty?: number;

  @ApiPropertyOptional({ description: 'Fixed seed: same request, same output' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(2 ** 32 - 1)
  seed?: number;

  @ApiPropertyOptional({ description: 'Only 1 is supported' })
  @IsOptional()
  @IsInt()
  @Equals(1, { message: 'n must be 1 (one choice per request is supported)' })
  n?: number;

  @ApiPropertyOptional({ oneOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }] })
  @IsOptional()
  @IsStringOrStringArray({ maxLength: 256, maxItems: 16 })
  stop?: string | string[];

  @ApiPropertyOptional({ description: 'vLLM/llama.cpp extension: generate until max_tokens even past end-of-text' })
  @IsOptional()
  @IsBoolean()
  ignore_eos?: boolean;

  @IsOptional()
  @IsBoolean()
  stream?: boolean;

  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => StreamOptionsDto)
  stream_options?: StreamOptionsDto;

  @IsOptional()
  @IsString()
  @MaxLength(256)
  user?: string;

  @ApiPropertyOptional({ type: () => RetrievalOptionDto, description: 'Ground the answer in a collection: its best chunks go into the prompt; the response lists them as sources' })
  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => RetrievalOptionDto)
  retrieval?: RetrievalOptionDto;
}

export class CompletionRequestDto extends SamplingDto {
  @ApiProperty({ oneOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' }, maxItems: 1 }] })
  @IsStringOrStringArray(
    { maxLength: MAX_TEXT, maxItems: 1 },
    { message: 'prompt must be a non-empty string (or an array holding one such string)' },
  )
  prompt!: string | string[];

  @ApiPropertyOptional({ minimum: 1, default: 16 })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(1_048_576)
  max_tokens?: number;
}

/** `content` is a string or OpenAI's array of `{type: "text", text}` parts. */
function IsMessageContent(): PropertyDecorator {
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isMessageContent',
      target: object.constructor,
      propertyName: propertyName as string,
      validator: {
        validate: (value: unknown) =>
          (typeof value === 'string' && value.length <= MAX_TEXT) ||
          (Array.isArray(value) &&
            value.length <= 64 &&
            value.every(
              (p) =>
                typeof p === 'object' &&
                p !== null &&
                (p as { type?: unknown }).type === 'text' &&
                typeof (p as { text?: unknown }).text === 'string' &&
                ((p as { text: string }).text.length <= MAX_TEXT),
            )),
        defaultMessage: (args: ValidationArguments) =>
          `${args.property} must be a string or an array of {"type":"text","text":string} parts (only text is supported)`,
      },
    });
}

export class ChatMessageDto {
  @ApiProperty({ enum: ['system', 'developer', 'user', 'assistant'] })
  @IsIn(['system', 'developer', 'user', 'assistant'])
  role!: 'system' | 'developer' | 'user' | 'assistant';

  @ApiProperty({ oneOf: [{ type: 'string' }, { type: 'array' }] })
  @IsMessageContent()
  content!: string | { type: 'text'; text: string }[];

  @IsOptional()
  @IsString()
  @MaxLength(256)
  name?: string;
}

export class JsonSchemaFormatDto {
  @IsOptional()
  @IsString()
  @MaxLength(256)
  name?: string;

  @IsObject()
  schema!: Record<string, unknown>;

  @IsOptional()
  @IsBoolean()
  strict?: boolean;
}

/** OpenAI's structured output: any JSON object, or JSON that matches a schema (enforced by a grammar). */
export class ResponseFormatDto {
  @IsIn(['text', 'json_object', 'json_schema'])
  type!: 'text' | 'json_object' | 'json_schema';

  @ValidateIf((o: ResponseFormatDto) => o.type === 'json_schema')
  @IsObject()
  @ValidateNested()
  @Type(() => JsonSchemaFormatDto)
  json_schema?: JsonSchemaFormatDto;
}

/** The JSON schema is free-form: validated as an object, not copied field by field (see FreeFormFields). */
@FreeFormFields('response_format.json_schema.schema')
export class ChatCompletionRequestDto extends SamplingDto {
  @ApiProperty({ type: [ChatMessageDto] })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(1024)
  @ValidateNested({ each: true })
  @Type(() => ChatMessageDto)
  messages!: ChatMessageDto[];

  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(1_048_576)
  max_tokens?: number;

  @ApiPropertyOptional({ description: 'Newer name of max_tokens; wins when both are set' })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(1_048_576)
  max_completion_tokens?: number;

  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => ResponseFormatDto)
  response_format?: ResponseFormatDto;
}

export class EmbeddingRequestDto {
  @IsOptional()
  @IsString()
  @MaxLength(256)
  model?: string;

  @ApiProperty({ oneOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }] })
  @IsStringOrStringArray({ maxLength: MAX_TEXT, maxItems: 256 })
  input!: string | string[];

  @ApiPropertyOptional({ enum: ['float', 'base64'], default: 'float' })
  @IsOptional()
  @IsIn(['float', 'base64'])
  encoding_format?: 'float' | 'base64';

  @IsOptional()
  @IsString()
  @MaxLength(256)
  user?: string;
}
