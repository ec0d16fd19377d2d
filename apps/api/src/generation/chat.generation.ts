import type { SamplingParams } from '@app/batching';
import type { ChatMessage, PreparedPrompt, ToolChoice, ToolDefinition } from '@app/inference';
import type { RoutedModel } from '../models/model-access.service';
import type { RetrievalOptionDto } from '../retrieval/retrieval.dto';
import { lastUserMessage, messagesWithContext } from '../retrieval/context.assembly';
import type { GenerationInput } from './generation.types';

/**
 * A conversation to answer, as every chat-shaped wire format resolves it (OpenAI chat, OpenAI
 * Responses, Anthropic Messages): messages in the inference layer's terms, tools and how they may
 * be used, sampling (with the response format's constraint already compiled), stop strings.
 */
export interface ChatGeneration {
  readonly messages: readonly ChatMessage[];
  /** The request field holding message `index`'s text, for the input guard's errors. */
  readonly field: (index: number) => string;
  readonly tools: readonly ToolDefinition[];
  readonly choice: ToolChoice;
  /** Whether one answer may hold several calls when a call is forced with `required` (default true). */
  readonly parallelToolCalls: boolean;
  /** Mutated: a forced call's grammar becomes its constraint. */
  readonly sampling: SamplingParams;
  /** Identity of the response format (the request's own JSON), for the cache keys. */
  readonly format?: string;
  readonly stop: readonly string[];
  /** Completion tokens asked for; undefined = the rest of the context. */
  readonly maxTokens?: number;
  /** Choices (OpenAI chat's `n`); default 1. */
  readonly n?: number;
  readonly retrieval?: RetrievalOptionDto;
  /** Called once the prompt is prepared (a presenter that announces the prompt's size first). */
  readonly onPrepared?: (prompt: PreparedPrompt) => void;
}

/** Whether the model sees the tools (`calling`) and whether a grammar makes it call one (`forced`). */
export function toolUse(tools: readonly ToolDefinition[], choice: ToolChoice): { calling: boolean; forced: boolean } {
  const calling = tools.length > 0 && choice.mode !== 'none';
  return { calling, forced: calling && (choice.mode === 'required' || choice.mode === 'function') };
}

/**
 * The pipeline input of a conversation: the guard sees each message, retrieval searches with the
 * last user message, the prompt is the model's chat template over the messages (and tools, when
 * the model may call them), a forced call is constrained by the tools' grammar, and tool calls
 * are parsed out of the output in the template's syntax. Tools, calls and results are part of the
 * text the semantic cache compares.
 */
export async function chatGenerationInput(routed: RoutedModel, g: ChatGeneration): Promise<GenerationInput> {
  const model = routed.handle;
  const { calling, forced } = toolUse(g.tools, g.choice);
  if (forced) {
    const choice = g.choice;
    const callable = choice.mode === 'function' ? g.tools.filter((t) => t.name === choice.name) : g.tools;
    g.sampling.constraint = await model.toolConstraint(callable, g.choice.mode === 'required' && g.parallelToolCalls);
  }
  const conversation = [
    ...(calling ? [`tools: ${JSON.stringify(g.tools)}`] : []),
    ...g.messages.map((m) => `${m.role}: ${m.content}${m.toolCalls?.length ? ` ${JSON.stringify(m.toolCalls.map((c) => [c.name, c.arguments]))}` : ''}`),
  ].join('\n');
  return {
    model: routed,
    family: 'chat',
    guard: g.messages.map((m, i) => ({ field: g.field(i), text: m.content })),
    retrieval: g.retrieval ? { option: g.retrieval, query: lastUserMessage(g.messages) } : undefined,
    prepare: (retrieved) => {
      const prompt = model.prepareChat(messagesWithContext([...g.messages], retrieved), g.maxTokens, calling ? g.tools : []);
      g.onPrepared?.(prompt);
      return {
        prompts: [{ prompt, cacheText: conversation }],
        n: g.n,
        sampling: g.sampling,
        stop: g.stop,
        requestedMaxTokens: g.maxTokens,
        format: JSON.stringify([g.format ?? null, calling ? { choice: g.choice, parallel: g.parallelToolCalls } : null]),
        toolSyntax: calling ? model.toolSyntax : undefined,
      };
    },
  };
}

/** Tool names must be unique within a request. */
export function duplicateToolName(tools: readonly ToolDefinition[]): string | undefined {
  const seen = new Set<string>();
  for (const t of tools) {
    if (seen.has(t.name)) return t.name;
    seen.add(t.name);
  }
  return undefined;
}
