import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
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
import { FieldPolicy, FreeFormFields } from '@app/common';
import { FINITE, IsToolDescription, IsToolName, IsToolSchema, MAX_TEXT } from '../generation/tool-fields';


/** `system`: a string, or text blocks. */
function IsSystem(): PropertyDecorator {
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isAnthropicSystem',
      target: object.constructor,
      propertyName: propertyName as string,
      validator: {
        validate: (value: unknown) =>
          (typeof value === 'string' && value.length <= MAX_TEXT) ||
          (Array.isArray(value) &&
            value.length <= 64 &&
            value.every((b) => typeof b === 'object' && b !== null && (b as { type?: unknown }).type === 'text' && typeof (b as { text?: unknown }).text === 'string' && (b as { text: string }).text.length <= MAX_TEXT)),
        defaultMessage: (args: ValidationArguments) => `${args.property} must be a string or an array of {"type": "text", "text": string} blocks`,
      },
    });
}

/** A custom tool (the only kind served; Anthropic's server tools are refused by the service). */
export class AnthropicToolDto {
  @IsOptional()
  @IsIn(['custom'], { message: 'type must be "custom" (or absent): only client tools with an input_schema are supported, not Anthropic\'s server tools' })
  type?: 'custom';

  @IsToolName()
  name!: string;

  @IsToolDescription()
  description?: string;

  @IsToolSchema(true)
  input_schema!: Record<string, unknown>;

  /** Inert: prompt prefixes are reused automatically. */
  @IsOptional()
  @IsObject()
  cache_control?: object;

  /** Calls always match the schema when forced (a grammar); `strict` asks nothing more. */
  @IsOptional()
  @IsBoolean()
  strict?: boolean;
}

export class AnthropicToolChoiceDto {
  @IsIn(['auto', 'any', 'tool', 'none'])
  type!: 'auto' | 'any' | 'tool' | 'none';

  @ValidateIf((c: AnthropicToolChoiceDto) => c.type === 'tool')
  @IsString()
  @MaxLength(64)
  name?: string;

  @IsOptional()
  @IsBoolean()
  disable_parallel_tool_use?: boolean;
}

export class AnthropicThinkingDto {
  @IsIn(['enabled', 'disabled', 'adaptive'])
  type!: 'enabled' | 'disabled' | 'adaptive';

  @IsOptional()
  @IsInt()
  budget_tokens?: number;
}

export class AnthropicOutputFormatDto {
  @IsIn(['json_schema'])
  type!: 'json_schema';

  @IsObject()
  schema!: Record<string, unknown>;
}

export class AnthropicOutputConfigDto {
  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => AnthropicOutputFormatDto)
  format?: AnthropicOutputFormatDto;

  /** Refused when set (see the service): the served model has no effort setting. */
  @IsOptional()
  @IsString()
  effort?: string;
}

export class AnthropicMetadataDto {
  /** Inert: an end-user id for the caller's own records. */
  @IsOptional()
  @IsString()
  @MaxLength(256)
  user_id?: string;
}

/** What count_tokens and messages share: the conversation and its tools. */
@FieldPolicy({
  refused: {
    container: 'code-execution containers are not available',
    mcp_servers: 'MCP servers are not available',
    context_management: 'server-side context management is not implemented',
  },
})
export class AnthropicConversationDto {
  @ApiProperty({ description: 'Served model id (see GET /v1/models)' })
  @IsString()
  @MaxLength(256)
  model!: string;

  @ApiProperty({ description: 'user/assistant messages: a string, or text, tool_use and tool_result blocks' })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(1024)
  @IsObject({ each: true, message: 'each of messages must be an object' })
  messages!: Record<string, unknown>[];

  @ApiPropertyOptional({ oneOf: [{ type: 'string' }, { type: 'array' }] })
  @IsOptional()
  @IsSystem()
  system?: string | { type: 'text'; text: string }[];

  @ApiPropertyOptional({ type: [AnthropicToolDto] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(128)
  @ValidateNested({ each: true })
  @Type(() => AnthropicToolDto)
  tools?: AnthropicToolDto[];

  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => AnthropicToolChoiceDto)
  tool_choice?: AnthropicToolChoiceDto;

  @ApiPropertyOptional({ description: '{"type": "disabled"} only: the served model has no extended thinking' })
  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => AnthropicThinkingDto)
  thinking?: AnthropicThinkingDto;

  @ApiPropertyOptional({ description: 'format: {"type": "json_schema", "schema"} constrains the output (a grammar)' })
  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => AnthropicOutputConfigDto)
  output_config?: AnthropicOutputConfigDto;

  /** Inert: prompt prefixes are reused automatically (Anthropic's cache_control only changes billing). */
  @IsOptional()
  @IsObject()
  cache_control?: object;
}

/** `POST /v1/messages`: Anthropic's Messages API. */
@FieldPolicy({
  refused: {
    container: 'code-execution containers are not available',
    mcp_servers: 'MCP servers are not available',
    context_management: 'server-side context management is not implemented',
  },
})
/** JSON schemas are free-form: validated as objects, not copied field by field (see FreeFormFields). */
@FreeFormFields('output_config.format.schema', 'tools.*.input_schema')
export class AnthropicMessagesDto extends AnthropicConversationDto {
  @ApiProperty({ minimum: 1, description: 'Required, as on Anthropic\'s API' })
  @IsInt()
  @Min(1)
  @Max(1_048_576)
  max_tokens!: number;

  @ApiPropertyOptional({ description: 'Up to 16 strings; the one that stopped the answer is stop_sequence' })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(16)
  @IsString({ each: true })
  @MaxLength(256, { each: true })
  stop_sequences?: string[];

  @IsOptional()
  @IsBoolean()
  stream?: boolean;

  @ApiPropertyOptional({ minimum: 0, maximum: 1, default: 1 })
  @IsOptional()
  @IsNumber(FINITE)
  @Min(0)
  @Max(1)
  temperature?: number;

  @ApiPropertyOptional({ minimum: 0, maximum: 1 })
  @IsOptional()
  @IsNumber(FINITE)
  @Min(0)
  @Max(1)
  top_p?: number;

  @ApiPropertyOptional({ minimum: 0, description: 'Default 40 (as on the other routes)' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(1000)
  top_k?: number;

  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => AnthropicMetadataDto)
  metadata?: AnthropicMetadataDto;

  @ApiPropertyOptional({ description: 'Accepted, inert: there is one service tier' })
  @IsOptional()
  @IsIn(['auto', 'standard_only'])
  service_tier?: 'auto' | 'standard_only';
}
