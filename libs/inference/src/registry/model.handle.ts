import type { FinishReason, GenerationEvent, SamplingParams, SubmitOptions } from '@app/batching';
import type { ChatMessage, EmbeddingResult, EmbeddingTokenizer, ModelDescriptor } from '../inference.types';
import type { ToolCallSyntax, ToolDefinition } from '../tools/tool.types';
import type { ModelKind, SamplingDefaults } from './model.types';

/** A prompt checked against the context: tokens ready for the scheduler. */
export interface PreparedPrompt {
  /** Tokens to evaluate, BOS included. */
  readonly tokens: number[];
  /** Prompt tokens as billed (= tokens.length). */
  readonly promptTokens: number;
  readonly maxTokens: number;
  /** Stop strings required by the chat template (added to the request's own). */
  readonly templateStop: readonly string[];
}

export interface GenerationRequest {
  readonly prompt: PreparedPrompt;
  readonly sampling: SamplingParams;
  readonly stop?: readonly string[];
  /**
   * Control tokens come out as their text (default false: they have none). For tool calling,
   * whose syntax may use them (Mistral's `[TOOL_CALLS]`).
   */
  readonly specialTokens?: boolean;
}

/** On a `done` event of generate(): the stop string (template's or request's) that ended the text, if one did. */
export interface StopDetail {
  readonly stopSequence?: string;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface CompletedGeneration {
  readonly text: string;
  readonly finishReason: FinishReason;
  readonly usage: Usage;
  readonly cachedPromptTokens: number;
}

/**
 * What a route does with one model, whichever it is: `InferenceService.acquire(name)` resolves
 * the request's `model` (id or alias), loads the model if needed and returns this. Prompts
 * prepared by one handle go to the same handle's `generate` (its tokenizer, its context, its
 * slots). Text generation needs a chat model, `embed` a chat or embedding model, `rank` a
 * reranker; the wrong kind is a 400 `model_kind_mismatch`.
 */
export interface ModelHandle {
  /** The model's id (what responses report, whatever alias the request used). */
  readonly id: string;
  /** Other names of the model (per-key access and limits match them too). */
  readonly aliases: readonly string[];
  readonly kind: ModelKind;
  readonly descriptor: ModelDescriptor;
  /** Sampling the models file sets for this model; request fields win. */
  readonly defaults: SamplingDefaults;
  prepareText(prompt: string, maxTokens: number | undefined, defaultMaxTokens: number | 'fill'): PreparedPrompt;
  /** A prompt given as token ids (OpenAI's token prompts); each must be in the vocabulary. */
  prepareTokens(tokens: readonly number[], maxTokens: number | undefined, defaultMaxTokens: number | 'fill', param?: string): PreparedPrompt;
  /** Throws a 400 naming `param` unless every id is a token of the model (llama.cpp aborts on others). */
  assertTokens(tokens: readonly number[], param: string): void;
  prepareChat(messages: readonly ChatMessage[], maxTokens: number | undefined, tools?: readonly ToolDefinition[]): PreparedPrompt;
  /** How the model writes function calls: its chat template's syntax, or the generic one. */
  readonly toolSyntax: ToolCallSyntax;
  /** A compiled constraint that makes the model call `tools` (see SamplingParams.constraint). */
  toolConstraint(tools: readonly ToolDefinition[], parallel: boolean): Promise<unknown>;
  /** A compiled constraint for SamplingParams.constraint: any JSON, or JSON matching `schema`. */
  constraintFor(format: 'json' | object): Promise<unknown>;
  /** Tokens of `text` (no BOS); `special`: control-token texts such as `<s>` become those tokens. */
  tokenize(text: string, options?: { readonly special?: boolean }): number[];
  /** Tokens as evaluated: BOS first when the model adds one (llama.cpp's add_special). */
  withSpecialTokens(tokens: readonly number[]): number[];
  /**
   * Each token's text as it appears after the tokens before it (so the pieces join into the
   * detokenized text), or its bytes when the token is part of a UTF-8 character (byte fallback).
   */
  tokenPieces(tokens: readonly number[], options?: { readonly special?: boolean }): (string | number[])[];
  /** Prompt tokens of a chat (template, tools, BOS) without the context check: what prepareChat would evaluate. */
  countChatTokens(messages: readonly ChatMessage[], tools?: readonly ToolDefinition[]): number;
  /**
   * Text of token ids (e.g. to echo a token prompt); every id must be a token of the model.
   * `special`: control tokens as their text (default: they have none).
   */
  detokenize(tokens: readonly number[], options?: { readonly special?: boolean }): string;
  /** Scheduled generation on this model's slots; iterate to run it. */
  generate(request: GenerationRequest, options?: SubmitOptions): AsyncIterable<GenerationEvent>;
  /** Runs a generation to the end and returns the whole text. */
  complete(request: GenerationRequest, options?: SubmitOptions): Promise<CompletedGeneration>;
  embed(texts: readonly (string | readonly number[])[]): Promise<EmbeddingResult>;
  embeddingTokenizer(): EmbeddingTokenizer;
  /** A reranker's relevance score of each document for the query, in the documents' order. */
  rank(query: string, documents: readonly string[]): Promise<number[]>;
}

export function toUsage(done: { promptTokens: number; completionTokens: number }): Usage {
  return {
    prompt_tokens: done.promptTokens,
    completion_tokens: done.completionTokens,
    total_tokens: done.promptTokens + done.completionTokens,
  };
}
