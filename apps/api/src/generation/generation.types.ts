import type { SamplingParams, TextLogprob } from '@app/batching';
import type { RenderedError } from '@app/common';
import type { PreparedPrompt, ToolCall, ToolCallSyntax } from '@app/inference';
import type { Source } from '@app/retrieval';
import type { RetrievalOptionDto } from '../retrieval/retrieval.dto';
import type { RetrievedContext } from '@app/retrieval';
import type { RoutedModel } from '../models/model-access.service';

/** Why a choice ended, in the API's words: `tool_calls` when the model called tools. */
export type ChoiceFinish = 'stop' | 'length' | 'tool_calls';

export interface TokenUsage {
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** Prompt tokens that were in a KV cache (or the response cache) and not evaluated again. */
  readonly cachedPromptTokens: number;
}

/**
 * What a wire format hands the pipeline: the caller's texts for the input guard, what to search
 * for retrieval, and how to build the prompts once the retrieved context is known.
 */
export interface GenerationInput {
  /** The model that answers (ModelAccessService.acquire): its prompts, its scheduler, its cache scope. */
  readonly model: RoutedModel;
  /** Response family for the caches (families never share entries). */
  readonly family: 'generate' | 'completions' | 'chat';
  /** The caller's own texts, checked by the input guard (not the retrieved context). */
  readonly guard: readonly { readonly field: string; readonly text: string }[];
  readonly retrieval?: { readonly option: RetrievalOptionDto | undefined; readonly query: string };
  prepare(retrieved: RetrievedContext | null): PreparedGeneration | Promise<PreparedGeneration>;
}

/** One prompt to answer (completions take several). */
export interface PromptInput {
  readonly prompt: PreparedPrompt;
  /** What the semantic cache compares: the prompt text, or the conversation as text. */
  readonly cacheText: string;
  /** Text put before the answer (completions' echo). */
  readonly echo?: string;
}

/** The generation, resolved: prompts, choices per prompt, sampling, constraints, tools. */
export interface PreparedGeneration {
  readonly prompts: readonly PromptInput[];
  /** Choices per prompt; choice j of prompt p has index p·n + j and seed `seed + j`. Default 1. */
  readonly n?: number;
  readonly sampling: SamplingParams;
  readonly stop: readonly string[];
  /** max_tokens as the client sent it (scopes the semantic cache). */
  readonly requestedMaxTokens?: number;
  /** Identity of the output constraint and output rendering (response_format, tools), for the cache keys. */
  readonly format?: string;
  /** Parse function calls out of the output in this syntax. */
  readonly toolSyntax?: ToolCallSyntax;
  /** The retrieved context's text and sources (set by the pipeline). */
  readonly retrievedContext?: string;
}

/** What a choice produces, as the presenters see it; `choice` is the choice's index. */
export type GenerationStreamEvent =
  | { readonly type: 'text'; readonly choice: number; readonly text: string; readonly logprobs?: readonly TextLogprob[] }
  | { readonly type: 'tool-call'; readonly choice: number; readonly index: number; readonly id: string; readonly name: string }
  | { readonly type: 'tool-arguments'; readonly choice: number; readonly index: number; readonly delta: string }
  | {
      readonly type: 'choice-end';
      readonly choice: number;
      readonly finishReason: ChoiceFinish;
      readonly usage: TokenUsage;
      /** The stop string (the template's or the request's) that ended the text, if one did. */
      readonly stopSequence?: string;
    };

/** A choice's whole answer. */
export interface ChoiceResult {
  readonly index: number;
  readonly text: string;
  readonly toolCalls: readonly ToolCall[];
  readonly finishReason: ChoiceFinish;
  /** The stop string that ended the text, if one did. */
  readonly stopSequence?: string;
  /** Present when logprobs were asked for. */
  readonly logprobs?: readonly TextLogprob[];
  readonly usage: TokenUsage;
}

/** The request's totals: prompts counted once each, completions of every choice. */
export interface GenerationSummary {
  readonly usage: TokenUsage;
  readonly sources?: readonly Source[];
}

export interface GenerationResult extends GenerationSummary {
  readonly choices: readonly ChoiceResult[];
}

/** An SSE event: its `data`, and its `event:` name for wire formats that use them. */
export interface SseFrame {
  readonly event?: string;
  readonly data: unknown;
  /** `data` already encoded as JSON: sent as is. */
  readonly json?: string;
}

/**
 * A frame built as JSON text rather than as an object (a streamed token's chunk: no object
 * built and serialised, field by field, for every token). `data` parses it for readers.
 */
export class EncodedFrame implements SseFrame {
  constructor(readonly json: string) {}

  get data(): unknown {
    return JSON.parse(this.json);
  }
}

/**
 * One wire format's rendering of a generation. The pipeline calls `body` for a JSON answer, or
 * `streamEvent` for each event and `streamEnd` once after the last for an SSE stream (seed API,
 * OpenAI chat and completions, OpenAI Responses, Anthropic Messages).
 */
export interface GenerationPresenter {
  /** Sent after the last SSE event (`[DONE]` for OpenAI's streams). */
  readonly terminator?: string;
  /** The format's error event for an error once the stream has started (default: the error body as `data:`). */
  streamError?(error: RenderedError): SseFrame;
  /** Frames for one event (none, one or several). */
  streamEvent(event: GenerationStreamEvent): readonly SseFrame[];
  /** Frames after every choice has ended (usage, sources). */
  streamEnd(summary: GenerationSummary): readonly SseFrame[];
  body(result: GenerationResult): unknown;
}
