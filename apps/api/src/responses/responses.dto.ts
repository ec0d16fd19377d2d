import { ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsNumber,
  IsObject,
  IsOptional,
  IsString,
  Matches,
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
import { RetrievalOptionDto } from '../retrieval/retrieval.dto';

/** Most input items one request may hold. */
export const MAX_INPUT_ITEMS = 1024;

/** What `include` may name: logprobs are implemented; the rest describe tools this server has not, so they add nothing. */
export const RESPONSE_INCLUDABLE = [
  'message.output_text.logprobs',
  'reasoning.encrypted_content',
  'file_search_call.results',
  'web_search_call.results',
  'web_search_call.action.sources',
  'code_interpreter_call.outputs',
  'computer_call_output.output.image_url',
  'message.input_image.image_url',
] as const;

/** `input`: a string, or a list of input items (checked item by item by the request mapper, which names the bad one). */
function IsResponsesInput(): PropertyDecorator {
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isResponsesInput',
      target: object.constructor,
      propertyName: propertyName as string,
      validator: {
        validate: (value: unknown) =>
          (typeof value === 'string' && value.length > 0 && value.length <= MAX_TEXT) ||
          (Array.isArray(value) && value.length > 0 && value.length <= MAX_INPUT_ITEMS && value.every((i) => typeof i === 'object' && i !== null && !Array.isArray(i))),
        defaultMessage: (args: ValidationArguments) =>
          `${args.property} must be a non-empty string of at most ${MAX_TEXT} characters or an array of 1 to ${MAX_INPUT_ITEMS} input items (objects)`,
      },
    });
}

/** `none | auto | required | {type: "function", name}`. */
function IsResponsesToolChoice(): PropertyDecorator {
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isResponsesToolChoice',
      target: object.constructor,
      propertyName: propertyName as string,
      validator: {
        validate: (value: unknown) =>
          (typeof value === 'string' && ['none', 'auto', 'required'].includes(value)) ||
          (typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'function' && typeof (value as { name?: unknown }).name === 'string'),
        defaultMessage: (args: ValidationArguments) =>
          `${args.property} must be "none", "auto", "required" or {"type": "function", "name": string} (only function tools are supported)`,
      },
    });
}

/** A function tool, flat as the Responses API writes it. */
export class ResponsesFunctionToolDto {
  @IsIn(['function'], { message: 'type must be "function": only function tools are supported (no built-in tools such as web_search or file_search)' })
  type!: 'function';

  @IsToolName()
  name!: string;

  @IsToolDescription()
  description?: string;

  @IsToolSchema()
  parameters?: Record<string, unknown>;

  /** Forced calls always match the schema (a grammar); `strict` asks nothing more. */
  @IsOptional()
  @IsBoolean()
  strict?: boolean;
}

/** `text.format`: plain text, any JSON object, or JSON matching a schema (a grammar enforces it). */
export class ResponsesTextFormatDto {
  @IsIn(['text', 'json_object', 'json_schema'])
  type!: 'text' | 'json_object' | 'json_schema';

  @ValidateIf((f: ResponsesTextFormatDto) => f.type === 'json_schema')
  @IsString()
  @MaxLength(256)
  name?: string;

  @ValidateIf((f: ResponsesTextFormatDto) => f.type === 'json_schema')
  @IsObject()
  schema?: Record<string, unknown>;

  @IsOptional()
  @IsString()
  @MaxLength(4096)
  description?: string;

  @IsOptional()
  @IsBoolean()
  strict?: boolean;
}

export class ResponsesTextDto {
  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => ResponsesTextFormatDto)
  format?: ResponsesTextFormatDto;

  /** Refused when set: the served model has no verbosity setting (see the service). */
  @IsOptional()
  @IsIn(['low', 'medium', 'high'])
  verbosity?: 'low' | 'medium' | 'high';
}

export class ResponsesStreamOptionsDto {
  /** Inert: no obfuscation padding is sent. */
  @IsOptional()
  @IsBoolean()
  include_obfuscation?: boolean;
}

/** `POST /v1/responses`: OpenAI's Responses API (function tools, structured output, stored responses). */
@FieldPolicy({
  refused: {
    background: 'background responses are not implemented: the request is answered while it is open',
    conversation: 'the Conversations API is not implemented; chain responses with previous_response_id',
    prompt: 'stored prompt templates are not implemented; send input and instructions',
    reasoning: 'the served model has no reasoning mode to adjust',
    context_management: 'server-side context compaction is not implemented',
    moderation: 'moderation is not implemented',
  },
})
/** JSON schemas are free-form: validated as objects, not copied field by field (see FreeFormFields). */
@FreeFormFields('text.format.schema', 'tools.*.parameters')
export class ResponsesRequestDto {
  @ApiPropertyOptional({ description: 'Served model id (see GET /v1/models)' })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  model?: string;

  @ApiPropertyOptional({ description: 'A string, or input items: messages (input_text parts), function_call, function_call_output, item_reference' })
  @IsResponsesInput()
  input!: string | Record<string, unknown>[];

  @ApiPropertyOptional({ description: 'A system message put first (not carried over by previous_response_id)' })
  @IsOptional()
  @IsString()
  @MaxLength(MAX_TEXT)
  instructions?: string;

  @ApiPropertyOptional({ minimum: 1, description: 'Default: the rest of the context' })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(1_048_576)
  max_output_tokens?: number;

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

  @ApiPropertyOptional({ minimum: 0, maximum: 20, description: 'Alternatives per token when include has message.output_text.logprobs' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(20)
  top_logprobs?: number;

  @IsOptional()
  @IsArray()
  @ArrayMaxSize(16)
  @IsIn(RESPONSE_INCLUDABLE, { each: true })
  include?: (typeof RESPONSE_INCLUDABLE)[number][];

  @ApiPropertyOptional({ type: [ResponsesFunctionToolDto] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(128)
  @ValidateNested({ each: true })
  @Type(() => ResponsesFunctionToolDto)
  tools?: ResponsesFunctionToolDto[];

  @ApiPropertyOptional({ description: 'none | auto (default with tools) | required | {"type":"function","name"}' })
  @IsOptional()
  @IsResponsesToolChoice()
  tool_choice?: 'none' | 'auto' | 'required' | { type: 'function'; name: string };

  @ApiPropertyOptional({ default: true })
  @IsOptional()
  @IsBoolean()
  parallel_tool_calls?: boolean;

  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => ResponsesTextDto)
  text?: ResponsesTextDto;

  @ApiPropertyOptional({ default: true, description: 'Keep the response (RESPONSES_RETENTION_SECONDS) for GET and previous_response_id' })
  @IsOptional()
  @IsBoolean()
  store?: boolean;

  @ApiPropertyOptional({ description: 'Continue the conversation of a stored response of the same key' })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  previous_response_id?: string;

  @IsOptional()
  @IsBoolean()
  stream?: boolean;

  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => ResponsesStreamOptionsDto)
  stream_options?: ResponsesStreamOptionsDto;

  @ApiPropertyOptional({ description: 'disabled (default): a conversation that does not fit is a 400; auto is refused' })
  @IsOptional()
  @IsIn(['auto', 'disabled'])
  truncation?: 'auto' | 'disabled';

  @ApiPropertyOptional({ description: 'Stored and returned with the response (at most 16 string values)' })
  @IsOptional()
  @IsObject()
  metadata?: Record<string, string>;

  @ApiPropertyOptional({ description: 'Accepted, inert: it limits calls to built-in tools, which this server has not' })
  @IsOptional()
  @IsInt()
  @Min(1)
  max_tool_calls?: number;

  @ApiPropertyOptional({ description: 'Accepted, inert: an end-user id' })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  user?: string;

  @IsOptional()
  @IsString()
  @MaxLength(256)
  safety_identifier?: string;

  @ApiPropertyOptional({ description: 'Accepted, inert: prefix reuse is automatic here' })
  @IsOptional()
  @IsString()
  @MaxLength(1024)
  prompt_cache_key?: string;

  @IsOptional()
  @IsIn(['in_memory', '24h'])
  prompt_cache_retention?: 'in_memory' | '24h';

  @IsOptional()
  @IsString()
  @MaxLength(32)
  service_tier?: string;

  @ApiPropertyOptional({ type: () => RetrievalOptionDto, description: 'Extension, as on chat: ground the answer in a collection' })
  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => RetrievalOptionDto)
  retrieval?: RetrievalOptionDto;
}

/** `GET /v1/responses/{id}/input_items` query. */
export class InputItemsQueryDto {
  @IsOptional()
  @Matches(/^(100|[1-9][0-9]?)$/, { message: 'limit must be an integer from 1 to 100' })
  limit?: string;

  @IsOptional()
  @IsIn(['asc', 'desc'])
  order?: 'asc' | 'desc';

  @IsOptional()
  @IsString()
  @MaxLength(256)
  after?: string;
}
