/** A function the model may call: OpenAI's function tool, as the inference layer sees it. */
export interface ToolDefinition {
  readonly name: string;
  readonly description?: string;
  /** JSON schema of the arguments object (default: any object). */
  readonly parameters?: Record<string, unknown>;
}

/** A call the model made (or made earlier, when replayed in the conversation). */
export interface ToolCall {
  readonly id: string;
  readonly name: string;
  /** The arguments as JSON text, as OpenAI sends them. */
  readonly arguments: string;
}

/**
 * How the served model writes function calls: the chat template's own syntax (node-llama-cpp's
 * chat wrapper settings, special tokens written as their text), or the generic format for
 * models without a template. Each call is `prefix name paramsPrefix <JSON arguments> suffix`;
 * with `parallel`, several calls are `sectionPrefix call betweenCalls call … sectionSuffix`.
 * Text after an end-of-generation token is cut off: the model stops there (`endsTurn`).
 */
export interface ToolCallSyntax {
  readonly prefix: string;
  readonly paramsPrefix: string;
  /** May contain `{{functionName}}`. */
  readonly suffix: string;
  /** The suffix ends the model's turn (an end-of-generation token follows): one call per turn. */
  readonly suffixEndsTurn: boolean;
  /** Whether a space may come before the prefix. */
  readonly optionalPrefixSpace: boolean;
  readonly parallel: { readonly sectionPrefix: string; readonly betweenCalls: string; readonly sectionSuffix: string } | null;
  /** Where the syntax comes from, for diagnostics: the chat wrapper's name or `generic`. */
  readonly source: string;
}

/** How a request lets the model use its tools (OpenAI's tool_choice). */
export type ToolChoice =
  | { readonly mode: 'none' }
  | { readonly mode: 'auto' }
  | { readonly mode: 'required' }
  | { readonly mode: 'function'; readonly name: string };

/** The generic syntax for models without a chat template (documented in the README). */
export const GENERIC_TOOL_SYNTAX: ToolCallSyntax = {
  prefix: '<tool_call>{"name": "',
  paramsPrefix: '", "arguments": ',
  suffix: '}</tool_call>',
  suffixEndsTurn: false,
  optionalPrefixSpace: true,
  parallel: { sectionPrefix: '', betweenCalls: '\n', sectionSuffix: '' },
  source: 'generic',
};
