import { Injectable } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { Reply } from '@app/common';
import { invalidField as invalid, unsupportedField as unsupported } from '../generation/request-fields';
import { SamplingParams } from '@app/batching';
import { Principal } from '@app/auth';
import { ChatMessage, ToolChoice, ToolDefinition } from '@app/inference';
import { ModelAccessService } from '../models/model-access.service';
import { chatGenerationInput, duplicateToolName, toolUse } from '../generation/chat.generation';
import { GenerationContext, GenerationPipeline } from '../generation/generation.pipeline';
import { AnthropicPresenter } from '../generation/presenters/anthropic.presenter';
import { AnthropicConversationDto, AnthropicMessagesDto } from './anthropic.dto';
import { anthropicToChatMessages } from './anthropic.messages';

/** The conversation, tools and tool choice of a request, resolved (shared by messages and count_tokens). */
interface Conversation {
  readonly messages: ChatMessage[];
  readonly tools: ToolDefinition[];
  readonly choice: ToolChoice;
  readonly parallel: boolean;
}

/**
 * Anthropic's Messages API on the generation pipeline: system and content blocks become chat
 * messages, tools (input_schema) and tool_choice (auto, any, tool, none) the chat's tools,
 * output_config.format the response format; the answer is rendered by the Anthropic presenter.
 */
@Injectable()
export class AnthropicService {
  constructor(
    private readonly models: ModelAccessService,
    private readonly pipeline: GenerationPipeline,
  ) {}

  async messages(dto: AnthropicMessagesDto, context: Omit<GenerationContext, 'stream'>): Promise<Reply> {
    const conversation = this.#conversation(dto);
    const { forced } = toolUse(conversation.tools, conversation.choice);
    const format = dto.output_config?.format;
    if (forced && format) throw unsupported('output_config.format', 'output_config.format cannot be combined with a forced tool call (tool_choice any or tool)');
    const routed = await this.models.acquire(dto.model, context.caller, 'chat');
    const model = routed.handle;
    const d = model.defaults;
    const sampling: SamplingParams = { temperature: dto.temperature ?? d.temperature ?? 1, topP: dto.top_p ?? d.top_p, topK: dto.top_k ?? d.top_k, minP: d.min_p };
    if (format) sampling.constraint = await model.constraintFor(format.schema);
    const presenter = new AnthropicPresenter({ id: `msg_${randomBytes(12).toString('hex')}`, model: model.id, stopSequences: dto.stop_sequences ?? [] });
    const input = await chatGenerationInput(routed, {
      messages: conversation.messages,
      field: (i) => (i === 0 && dto.system ? 'system' : 'messages'),
      tools: conversation.tools,
      choice: conversation.choice,
      parallelToolCalls: conversation.parallel,
      sampling,
      format: format ? JSON.stringify(format) : undefined,
      stop: dto.stop_sequences ?? [],
      maxTokens: dto.max_tokens,
      onPrepared: (prompt) => (presenter.promptTokens = prompt.promptTokens),
    });
    return this.pipeline.run(input, { ...context, stream: dto.stream === true }, presenter);
  }

  /** `{input_tokens}`: the prompt the same request would evaluate (template, tools when the model may call them, BOS). */
  async countTokens(dto: AnthropicConversationDto, caller: Principal | undefined): Promise<object> {
    const c = this.#conversation(dto);
    const model = (await this.models.acquire(dto.model, caller, 'chat')).handle;
    return { input_tokens: model.countChatTokens(c.messages, toolUse(c.tools, c.choice).calling ? c.tools : []) };
  }

  #conversation(dto: AnthropicConversationDto): Conversation {
    if (dto.thinking && dto.thinking.type !== 'disabled') throw unsupported('thinking', 'thinking is not supported: the served model has no extended thinking (send {"type": "disabled"} or omit it)');
    if (dto.output_config?.effort !== undefined) throw unsupported('output_config.effort', 'output_config.effort is not supported: the served model has no effort setting');
    const messages = anthropicToChatMessages(dto.system, dto.messages);
    const tools: ToolDefinition[] = (dto.tools ?? []).map((t) => ({ name: t.name, description: t.description, parameters: t.input_schema }));
    const twice = duplicateToolName(tools);
    if (twice !== undefined) throw invalid('tools', `two tools are named ${JSON.stringify(twice)}`);
    const raw = dto.tool_choice;
    let choice: ToolChoice;
    if (!raw) choice = { mode: tools.length ? 'auto' : 'none' };
    else if (raw.type === 'any') choice = { mode: 'required' };
    else if (raw.type === 'tool') {
      if (!tools.some((t) => t.name === raw.name)) throw invalid('tool_choice.name', `tool_choice.name ${JSON.stringify(raw.name)} is not one of the request's tools`);
      choice = { mode: 'function', name: raw.name as string };
    } else choice = { mode: raw.type };
    if ((choice.mode === 'required' || choice.mode === 'function') && tools.length === 0) throw invalid('tool_choice', 'tool_choice asks for a tool call but the request has no tools');
    return { messages, tools, choice, parallel: raw?.disable_parallel_tool_use !== true };
  }
}
