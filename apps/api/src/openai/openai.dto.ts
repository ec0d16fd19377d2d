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
import { FieldPolicy, FreeFormFields, IsStringOrStringArray } from '@app/common';
import { RetrievalOptionDto } from '../retrieval/retrieval.dto';
import { FINITE, IsToolDescription, IsToolName, IsToolSchema, MAX_TEXT } from '../generation/tool-fields';

export { MAX_TEXT };


export class StreamOptionsDto {
  @IsOptional()
  @IsBoolean()
  include_usage?: boolean;

  /** Inert: the stream carries no obfuscation padding either way. */
  @IsOptional()
  @IsBoolean()
  include_obfuscation?: boolean;
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

  @ApiPropertyOptional({ minimum: 1, default: 1, description: 'Choices per prompt, at most PARALLEL_SLOTS; each its own seed (seed + i)' })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(128)
  n?: number;

  @ApiPropertyOptional({ description: 'Token id → bias from -100 (never) to 100; added to the logits' })
  @IsOptional()
  @IsLogitBias()
  logit_bias?: Record<string, number>;

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

  @ApiPropertyOptional({ description: 'Accepted, inert: an end-user id for the caller\'s own records' })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  user?: string;

  @ApiPropertyOptional({ description: 'Accepted, inert: OpenAI\'s abuse-tracking id' })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  safety_identifier?: string;

  @ApiPropertyOptional({ description: 'Accepted, inert: OpenAI\'s routing hint for its prompt cache (prefix reuse here is automatic)' })
  @IsOptional()
  @IsString()
  @MaxLength(1024)
  prompt_cache_key?: string;

  @ApiPropertyOptional({ description: 'Accepted, inert: OpenAI\'s tag map for stored completions' })
  @IsOptional()
  @IsObject()
  metadata?: Record<string, string>;

  @ApiPropertyOptional({ description: 'Accepted, inert: nothing is stored for OpenAI\'s stored-completions API' })
  @IsOptional()
  @IsBoolean()
  store?: boolean;

  @ApiPropertyOptional({ description: 'Accepted, inert: there is one service tier' })
  @IsOptional()
  @IsString()
  @MaxLength(32)
  service_tier?: string;

  @ApiPropertyOptional({ type: () => RetrievalOptionDto, description: 'Ground the answer in a collection: its best chunks go into the prompt; the response lists them as sources' })
  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => RetrievalOptionDto)
  retrieval?: RetrievalOptionDto;
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

  @IsOptional()
  @IsString()
  @MaxLength(4096)
  description?: string;
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

/** OpenAI's `logit_bias`: token id (as a string) → number from -100 to 100. */
function IsLogitBias(): PropertyDecorator {
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isLogitBias',
      target: object.constructor,
      propertyName: propertyName as string,
      validator: {
        validate: (value: unknown) =>
          typeof value === 'object' &&
          value !== null &&
          !Array.isArray(value) &&
          Object.keys(value).length <= 1024 &&
          Object.entries(value).every(([k, v]) => /^\d{1,9}$/.test(k) && typeof v === 'number' && Number.isFinite(v) && v >= -100 && v <= 100),
        defaultMessage: (args: ValidationArguments) => `${args.property} must map token ids (strings of digits) to numbers from -100 to 100 (at most 1024 entries)`,
      },
    });
}

/** A completions prompt: a string, strings, token ids, or arrays of token ids (one choice each). */
function IsPrompt(): PropertyDecorator {
  const ids = (v: unknown): boolean => Array.isArray(v) && v.length > 0 && v.length <= 1_048_576 && v.every((t) => Number.isInteger(t) && t >= 0);
  const text = (v: unknown): boolean => typeof v === 'string' && v.length > 0 && v.length <= MAX_TEXT;
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isPrompt',
      target: object.constructor,
      propertyName: propertyName as string,
      validator: {
        validate: (value: unknown) =>
          text(value) ||
          ids(value) ||
          (Array.isArray(value) && value.length > 0 && value.length <= MAX_PROMPTS && (value.every(text) || value.every(ids))),
        defaultMessage: (args: ValidationArguments) =>
          `${args.property} must be a non-empty string, an array of at most ${MAX_PROMPTS} such strings, an array of token ids, or an array of at most ${MAX_PROMPTS} arrays of token ids`,
      },
    });
}

/** Prompts one completions request may hold (each is one choice, or n). */
export const MAX_PROMPTS = 32;

@FieldPolicy({
  refused: {
    suffix: 'text after the insertion point (fill-in-the-middle) is not implemented',
  },
})
export class CompletionRequestDto extends SamplingDto {
  @ApiProperty({
    oneOf: [
      { type: 'string' },
      { type: 'array', items: { type: 'string' } },
      { type: 'array', items: { type: 'integer' } },
      { type: 'array', items: { type: 'array', items: { type: 'integer' } } },
    ],
  })
  @IsPrompt()
  prompt!: string | string[] | number[] | number[][];

  @ApiPropertyOptional({ minimum: 1, default: 16 })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(1_048_576)
  max_tokens?: number;

  @ApiPropertyOptional({ description: 'Put the prompt before the completion' })
  @IsOptional()
  @IsBoolean()
  echo?: boolean;

  @ApiPropertyOptional({ minimum: 0, maximum: 5, description: 'Log-probabilities of each token and of this many alternatives' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(5)
  logprobs?: number;

  @ApiPropertyOptional({ description: 'Only equal to n (no server-side best-of selection)' })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(128)
  best_of?: number;

  @ApiPropertyOptional({ description: 'Extension: JSON output, as on chat' })
  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => ResponseFormatDto)
  response_format?: ResponseFormatDto;
}

/** `content` is a string or OpenAI's array of `{type: "text", text}` parts (null: an assistant's tool calls only). */
function IsMessageContent(): PropertyDecorator {
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isMessageContent',
      target: object.constructor,
      propertyName: propertyName as string,
      validator: {
        validate: (value: unknown, args: ValidationArguments) =>
          (value === null && ['assistant', 'tool', 'function'].includes((args.object as ChatMessageDto).role)) ||
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

/** A tool name as OpenAI accepts it. */

export class FunctionCallDto {
  @IsToolName('function.name')
  name!: string;

  @IsString()
  @MaxLength(MAX_TEXT)
  arguments!: string;
}

export class ToolCallDto {
  @IsString()
  @MaxLength(256)
  id!: string;

  @IsIn(['function'])
  type!: 'function';

  @IsObject()
  @ValidateNested()
  @Type(() => FunctionCallDto)
  function!: FunctionCallDto;
}

export class ChatMessageDto {
  @ApiProperty({ enum: ['system', 'developer', 'user', 'assistant', 'tool', 'function'] })
  @IsIn(['system', 'developer', 'user', 'assistant', 'tool', 'function'])
  role!: 'system' | 'developer' | 'user' | 'assistant' | 'tool' | 'function';

  @ApiProperty({ oneOf: [{ type: 'string' }, { type: 'array' }], nullable: true })
  @ValidateIf((m: ChatMessageDto) => m.content !== undefined || !(m.role === 'assistant' && (m.tool_calls || m.function_call)))
  @IsMessageContent()
  content!: string | { type: 'text'; text: string }[] | null;

  @IsOptional()
  @IsString()
  @MaxLength(256)
  name?: string;

  @ApiPropertyOptional({ description: 'Assistant messages: the calls the model made' })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(128)
  @ValidateNested({ each: true })
  @Type(() => ToolCallDto)
  tool_calls?: ToolCallDto[];

  @ApiPropertyOptional({ description: 'Tool messages: the id of the call this answers' })
  @ValidateIf((m: ChatMessageDto) => m.role === 'tool')
  @IsString()
  @MaxLength(256)
  tool_call_id?: string;

  @ApiPropertyOptional({ description: 'Legacy: an assistant message\'s function call' })
  @IsOptional()
  @IsObject()
  @ValidateNested()
  @Type(() => FunctionCallDto)
  function_call?: FunctionCallDto;
}

export class FunctionDefinitionDto {
  @IsToolName()
  name!: string;

  @IsToolDescription()
  description?: string;

  @IsToolSchema()
  parameters?: Record<string, unknown>;

  /** Arguments always match the schema when a call is forced (a grammar); `strict` asks nothing more. */
  @IsOptional()
  @IsBoolean()
  strict?: boolean;
}

export class ToolDto {
  @IsIn(['function'], { message: 'type must be "function" (only function tools are supported)' })
  type!: 'function';

  @IsObject()
  @ValidateNested()
  @Type(() => FunctionDefinitionDto)
  function!: FunctionDefinitionDto;
}

/** `none | auto | required | {type: "function", function: {name}}` (and the legacy `{name}` of function_call). */
function IsToolChoice(legacy: boolean): PropertyDecorator {
  const named = (v: unknown): boolean => {
    if (typeof v !== 'object' || v === null) return false;
    const o = v as { type?: unknown; function?: { name?: unknown }; name?: unknown };
    if (legacy) return typeof o.name === 'string';
    return o.type === 'function' && typeof o.function === 'object' && o.function !== null && typeof o.function.name === 'string';
  };
  const words = legacy ? ['none', 'auto'] : ['none', 'auto', 'required'];
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isToolChoice',
      target: object.constructor,
      propertyName: propertyName as string,
      validator: {
        validate: (value: unknown) => (typeof value === 'string' && words.includes(value)) || named(value),
        defaultMessage: (args: ValidationArguments) =>
          `${args.property} must be ${words.map((w) => `"${w}"`).join(', ')} or ${legacy ? '{"name": string}' : '{"type": "function", "function": {"name": string}}'}`,
      },
    });
}

@FieldPolicy({
  refused: {
    audio: 'audio output is not supported (text only)',
    web_search_options: 'web search is not available',
    reasoning_effort: 'the served model has no reasoning mode to adjust',
    verbosity: 'the served model has no verbosity setting',
  },
})
/** JSON schemas are free-form: validated as objects, not copied field by field (see FreeFormFields). */
@FreeFormFields('response_format.json_schema.schema', 'tools.*.function.parameters', 'functions.*.parameters')
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

  @ApiPropertyOptional({ type: [ToolDto] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(128)
  @ValidateNested({ each: true })
  @Type(() => ToolDto)
  tools?: ToolDto[];

  @ApiPropertyOptional({ description: 'none | auto (default with tools) | required | {"type":"function","function":{"name"}}' })
  @IsOptional()
  @IsToolChoice(false)
  tool_choice?: 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } };

  @ApiPropertyOptional({ default: true })
  @IsOptional()
  @IsBoolean()
  parallel_tool_calls?: boolean;

  @ApiPropertyOptional({ type: [FunctionDefinitionDto], description: 'Legacy form of tools' })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(128)
  @ValidateNested({ each: true })
  @Type(() => FunctionDefinitionDto)
  functions?: FunctionDefinitionDto[];

  @ApiPropertyOptional({ description: 'Legacy form of tool_choice: none | auto | {"name"}' })
  @IsOptional()
  @IsToolChoice(true)
  function_call?: 'none' | 'auto' | { name: string };

  @ApiPropertyOptional({ description: 'Return log-probabilities of the output tokens' })
  @IsOptional()
  @IsBoolean()
  logprobs?: boolean;

  @ApiPropertyOptional({ minimum: 0, maximum: 20, description: 'Alternatives per token (needs logprobs: true)' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(20)
  top_logprobs?: number;

  @ApiPropertyOptional({ description: 'Only ["text"]' })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(4)
  @IsString({ each: true })
  modalities?: string[];

  @ApiPropertyOptional({ description: 'Accepted, inert: a prediction only speeds up OpenAI\'s decoding, never changes the output' })
  @IsOptional()
  @IsObject()
  prediction?: Record<string, unknown>;
}

@FieldPolicy({})
export class EmbeddingRequestDto {
  @IsOptional()
  @IsString()
  @MaxLength(256)
  model?: string;

  @ApiProperty({ oneOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }, { type: 'array', items: { type: 'integer' } }] })
  @IsEmbeddingInput()
  input!: string | string[] | number[] | number[][];

  @ApiPropertyOptional({ enum: ['float', 'base64'], default: 'float' })
  @IsOptional()
  @IsIn(['float', 'base64'])
  encoding_format?: 'float' | 'base64';

  @ApiPropertyOptional({ description: 'Only the model\'s own dimension (no truncated embeddings)' })
  @IsOptional()
  @IsInt()
  @Min(1)
  dimensions?: number;

  @IsOptional()
  @IsString()
  @MaxLength(256)
  user?: string;
}

/** Embeddings input: a string, strings, token ids, or arrays of token ids (at most 256 inputs). */
function IsEmbeddingInput(): PropertyDecorator {
  const ids = (v: unknown): boolean => Array.isArray(v) && v.length > 0 && v.length <= 8192 && v.every((t) => Number.isInteger(t) && t >= 0);
  const text = (v: unknown): boolean => typeof v === 'string' && v.length > 0 && v.length <= MAX_TEXT;
  return (object: object, propertyName: string | symbol) =>
    registerDecorator({
      name: 'isEmbeddingInput',
      target: object.constructor,
      propertyName: propertyName as string,
      validator: {
        validate: (value: unknown) =>
          text(value) || ids(value) || (Array.isArray(value) && value.length > 0 && value.length <= 256 && (value.every(text) || value.every(ids))),
        defaultMessage: (args: ValidationArguments) =>
          `${args.property} must be a non-empty string of at most ${MAX_TEXT} characters, an array of at most 256 such strings, an array of token ids, or an array of at most 256 arrays of token ids`,
      },
    });
}
