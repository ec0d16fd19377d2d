import { applyDecorators } from '@nestjs/common';
import { IsObject, IsOptional, IsString, Matches, MaxLength } from 'class-validator';

/** Numbers in requests are finite (no NaN, no Infinity). */
export const FINITE = { allowNaN: false, allowInfinity: false } as const;
/** Longest prompt or message text accepted, in characters (the context decides the rest). */
export const MAX_TEXT = 200_000;
/** A tool's name, in every wire format (OpenAI's rule, which Anthropic's and the Responses API's match). */
export const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/** A tool's `name` (also a called function's name): 1-64 letters, digits, _ or -. */
export function IsToolName(field = 'name'): PropertyDecorator {
  return applyDecorators(IsString(), Matches(TOOL_NAME, { message: `${field} must be 1-64 letters, digits, _ or -` }));
}

/** A tool's optional `description`. */
export function IsToolDescription(): PropertyDecorator {
  return applyDecorators(IsOptional(), IsString(), MaxLength(MAX_TEXT));
}

/** A tool's JSON-schema parameters (optional in OpenAI's formats, required as Anthropic's `input_schema`). */
export function IsToolSchema(required = false): PropertyDecorator {
  return required ? IsObject() : applyDecorators(IsOptional(), IsObject());
}
