import { Injectable } from '@nestjs/common';
import { randomBytes, randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import { Principal } from '@app/auth';
import { Reply } from '@app/common';
import { SamplingParams } from '@app/batching';
import { ChatMessage, InferenceErrorCode, InferenceException, InferenceService, ModelHandle, ToolChoice, ToolDefinition } from '@app/inference';
import type { ModelEntryView } from '@app/inference';
import { invalidField as invalid, unsupportedField as unsupported } from '../generation/request-fields';
import { ModelAccessService } from '../models/model-access.service';
import { GenerationContext, GenerationPipeline } from '../generation/generation.pipeline';
import { PromptInput } from '../generation/generation.types';
import { ChatPresenter } from '../generation/presenters/chat.presenter';
import { CompletionsPresenter } from '../generation/presenters/completions.presenter';
import { promptWithContext } from '../retrieval/context.assembly';
import { chatGenerationInput, duplicateToolName, toolUse } from '../generation/chat.generation';
import { ChatCompletionRequestDto, CompletionRequestDto, EmbeddingRequestDto, ResponseFormatDto, SamplingDto } from './openai.dto';
import { UsageMeterService } from '../usage/usage-meter.service';

/**
 * OpenAI's wire format: requests mapped onto the generation pipeline (chat with tools, structured
 * output, logprobs, n, logit_bias; completions with prompt arrays, token prompts and echo), the
 * answers rendered by the chat and completions presenters; embeddings and models.
 */
@Injectable()
export class OpenAIService {
  constructor(
    private readonly inference: InferenceService,
    private readonly models: ModelAccessService,
    private readonly pipeline: GenerationPipeline,
    private readonly usage: UsageMeterService,
  ) {}

  /** Every configured model the caller's key may use, with its state (`loaded`, `loading`, `unloaded`, ...). */
  listModels(caller?: Principal): object {
    const data = this.inference
      .models()
      .filter((m) => this.models.allowed(caller, m.spec.id, m.spec.aliases))
      .map((m) => modelObject(m));
    return { object: 'list', data };
  }

  /** One model by id or alias (404 for others, and for models the key may not use). */
  getModel(id: string, caller?: Principal): object {
    const resolved = this.inference.resolve(id);
    // A model the key may not use is not shown to it either (as OpenAI does for other organizations' models).
    if (!this.models.allowed(caller, resolved.id, resolved.aliases)) {
      throw new InferenceException(InferenceErrorCode.ModelNotFound, `The model '${id}' does not exist; GET /v1/models lists the models of this server`, { param: 'model' });
    }
    return modelObject(this.inference.entry(resolved.id));
  }

  async completions(dto: CompletionRequestDto, context: Omit<GenerationContext, 'stream'>): Promise<Reply> {
    const routed = await this.models.acquire(dto.model, context.caller, 'chat');
    const model = routed.handle;
    const n = this.#n(dto, model);
    if (dto.best_of !== undefined && dto.best_of !== n) throw unsupported('best_of', `best_of must equal n (${n}): choosing the best of several completions server-side is not implemented`);
    if (dto.echo && dto.logprobs !== undefined) throw unsupported('echo', 'echo together with logprobs (log-probabilities of the prompt tokens) is not implemented');
    const prompts = normalizePrompt(dto.prompt);
    prompts.forEach((p, i) => typeof p !== 'string' && model.assertTokens(p, prompts.length > 1 ? `prompt[${i}]` : 'prompt'));
    if (dto.retrieval && prompts.length > 1) throw unsupported('retrieval', 'retrieval works with one prompt per request');
    const texts = prompts.filter((p): p is string => typeof p === 'string');
    const sampling = await this.#sampling(dto, dto.logprobs, dto.response_format, model);
    const maxTokens = dto.max_tokens ?? model.defaults.max_tokens;
    return this.pipeline.run(
      {
        model: routed,
        family: 'completions',
        guard: texts.map((text, i) => ({ field: prompts.length > 1 ? `prompt[${i}]` : 'prompt', text })),
        retrieval: dto.retrieval ? { option: dto.retrieval, query: texts[0] ?? model.detokenize(prompts[0] as number[]) } : undefined,
        prepare: (retrieved) => ({
          prompts: prompts.map((p, i): PromptInput => {
            const param = prompts.length > 1 ? `prompt[${i}]` : 'prompt';
            if (typeof p === 'string') {
              return { prompt: model.prepareText(promptWithContext(p, retrieved), maxTokens, 16), cacheText: p, echo: dto.echo ? p : undefined };
            }
            const context = retrieved?.context ? model.tokenize(retrieved.context) : [];
            const text = model.detokenize(p);
            return { prompt: model.prepareTokens([...context, ...p], maxTokens, 16, param), cacheText: text, echo: dto.echo ? text : undefined };
          }),
          n,
          sampling: sampling.params,
          stop: asArray(dto.stop),
          requestedMaxTokens: dto.max_tokens,
          format: sampling.format,
        }),
      },
      { ...context, stream: dto.stream === true },
      new CompletionsPresenter(this.#meta('cmpl', model), { includeUsage: dto.stream_options?.include_usage === true, logprobs: dto.logprobs }),
    );
  }

  async chat(dto: ChatCompletionRequestDto, context: Omit<GenerationContext, 'stream'>): Promise<Reply> {
    const routed = await this.models.acquire(dto.model, context.caller, 'chat');
    const model = routed.handle;
    const n = this.#n(dto, model);
    if (dto.modalities && (dto.modalities.length !== 1 || dto.modalities[0] !== 'text')) throw unsupported('modalities', 'modalities must be ["text"]: only text output is supported');
    if (dto.top_logprobs !== undefined && dto.logprobs !== true) throw invalid('top_logprobs', 'top_logprobs needs logprobs: true');
    const messages = toChatMessages(dto);
    const { tools, choice, legacy } = toolsOf(dto);
    const { forced } = toolUse(tools, choice);
    const format = dto.response_format && dto.response_format.type !== 'text' ? dto.response_format : undefined;
    if (forced && format) throw unsupported('response_format', 'response_format cannot be combined with a forced tool call (tool_choice required or a named function)');
    if (forced && dto.ignore_eos) throw unsupported('ignore_eos', 'ignore_eos cannot be combined with a forced tool call: the call ends the output');
    const logprobs = dto.logprobs ? (dto.top_logprobs ?? 0) : undefined;
    const sampling = await this.#sampling(dto, logprobs, format, model);
    const input = await chatGenerationInput(routed, {
      messages,
      field: (i) => `messages[${i}].content`,
      tools,
      choice,
      parallelToolCalls: dto.parallel_tool_calls !== false,
      sampling: sampling.params,
      format: sampling.format,
      stop: asArray(dto.stop),
      maxTokens: dto.max_completion_tokens ?? dto.max_tokens ?? model.defaults.max_tokens,
      n,
      retrieval: dto.retrieval,
    });
    return this.pipeline.run(
      input,
      { ...context, stream: dto.stream === true },
      new ChatPresenter(this.#meta('chatcmpl', model), { includeUsage: dto.stream_options?.include_usage === true, topLogprobs: logprobs, legacyFunctions: legacy }),
    );
  }

  /**
   * With the named model (an embedding or a chat model), else the embedding model, else the default
   * model. Charged in tokens like generations: reserved at admission, settled to the count.
   */
  async embeddings(dto: EmbeddingRequestDto, caller?: Principal): Promise<object> {
    const model = (await this.models.acquire(dto.model, caller, ['embedding', 'chat'])).handle;
    const dimension = model.descriptor.embeddingLength;
    if (dto.dimensions !== undefined && dto.dimensions !== dimension) {
      throw unsupported('dimensions', `this model's embeddings have ${dimension} dimensions and cannot be shortened; omit dimensions or send ${dimension}`);
    }
    const inputs = normalizeEmbeddingInput(dto.input);
    inputs.forEach((input, i) => typeof input !== 'string' && model.assertTokens(input, inputs.length > 1 ? `input[${i}]` : 'input'));
    // Each input as the model sees it, plus its begin/end tokens: an upper bound, settled to the count.
    const bound = inputs.reduce((n, input) => n + (typeof input === 'string' ? model.tokenize(input).length : input.length) + 2, 0);
    const reservation = await this.usage.reserve(caller, bound);
    let embedded: Awaited<ReturnType<ModelHandle['embed']>>;
    try {
      embedded = await model.embed(inputs);
    } catch (err) {
      await reservation.release();
      throw err;
    }
    const { vectors, promptTokens } = embedded;
    await reservation.settle(promptTokens);
    this.usage.embedded(promptTokens);
    const base64 = dto.encoding_format === 'base64';
    return {
      object: 'list',
      model: model.id,
      data: vectors.map((raw, index) => {
        // Unit length, like OpenAI's: cosine similarity is then a dot product.
        const v = normalize(raw);
        // base64 is little-endian float32, which is what the official SDKs decode by default.
        return { object: 'embedding', index, embedding: base64 ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') : Array.from(v) };
      }),
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
    };
  }

  #n(dto: SamplingDto, model: ModelHandle): number {
    const n = dto.n ?? 1;
    const slots = model.descriptor.slots;
    if (n > slots) {
      throw unsupported('n', `n must be at most ${slots} (the slots of model ${model.id}: PARALLEL_SLOTS or its slots setting): the choices are generated side by side`);
    }
    return n;
  }

  /** Sampling of a request (the model's defaults where the request sets nothing), its logit_bias checked against the vocabulary, its response_format compiled. */
  async #sampling(dto: SamplingDto, logprobs: number | undefined, format: ResponseFormatDto | undefined, model: ModelHandle): Promise<{ params: SamplingParams; format?: string }> {
    const d = model.defaults;
    const params: SamplingParams = {
      temperature: dto.temperature ?? d.temperature ?? 1,
      topP: dto.top_p ?? d.top_p,
      topK: dto.top_k ?? d.top_k,
      minP: dto.min_p ?? d.min_p,
      seed: dto.seed,
      repeatPenalty: dto.repeat_penalty ?? d.repeat_penalty,
      presencePenalty: dto.presence_penalty ?? d.presence_penalty,
      frequencyPenalty: dto.frequency_penalty ?? d.frequency_penalty,
      ignoreEos: dto.ignore_eos,
      logprobs,
    };
    if (dto.logit_bias && Object.keys(dto.logit_bias).length) {
      const vocab = model.descriptor.vocabularySize;
      const bias = new Map<number, number>();
      for (const [key, value] of Object.entries(dto.logit_bias)) {
        const token = Number(key);
        if (vocab > 0 && token >= vocab) throw invalid('logit_bias', `logit_bias names token ${token}, but the vocabulary has ${vocab} tokens (0 to ${vocab - 1})`);
        bias.set(token, value);
      }
      params.logitBias = bias;
    }
    const constrained = format && format.type !== 'text' ? format : undefined;
    if (!constrained) return { params };
    if (dto.ignore_eos) throw unsupported('ignore_eos', 'ignore_eos cannot be combined with response_format: the JSON value ends the output');
    params.constraint = await model.constraintFor(constrained.type === 'json_object' ? 'json' : (constrained.json_schema as { schema: object }).schema);
    return { params, format: JSON.stringify(constrained) };
  }

  #meta(prefix: string, model: ModelHandle): { id: string; created: number; model: string } {
    return { id: `${prefix}-${randomUUID()}`, created: Math.floor(Date.now() / 1000), model: model.id };
  }
}

/**
 * A model as `/v1/models` lists it: OpenAI's fields, plus its kind, aliases, state and, once
 * loaded, its sizes (`meta`, as before; absent while it is not loaded).
 */
function modelObject(m: ModelEntryView): object {
  const d = m.descriptor;
  let created: number;
  try {
    created = Math.floor(statSync(m.spec.path).mtimeMs / 1000);
  } catch {
    created = 0;
  }
  return {
    id: m.spec.id,
    object: 'model',
    created,
    owned_by: 'local',
    kind: m.spec.kind,
    aliases: m.spec.aliases,
    state: m.state,
    default: m.isDefault,
    ...(m.error ? { error: m.error } : {}),
    ...(d ? { meta: { context_size: d.contextSize, train_context_size: d.trainContextSize, vocab_size: d.vocabularySize, size_bytes: d.sizeBytes } } : {}),
  };
}

function asArray(value: string | string[] | undefined): string[] {
  return value === undefined ? [] : typeof value === 'string' ? [value] : value;
}

/** A completions prompt as a list of prompts: strings or token-id arrays. */
function normalizePrompt(prompt: CompletionRequestDto['prompt']): (string | number[])[] {
  if (typeof prompt === 'string') return [prompt];
  if (prompt.every((p) => typeof p === 'number')) return [prompt as number[]];
  return prompt as (string | number[])[];
}

function normalizeEmbeddingInput(input: EmbeddingRequestDto['input']): (string | number[])[] {
  if (typeof input === 'string') return [input];
  if (input.every((p) => typeof p === 'number')) return [input as number[]];
  return input as (string | number[])[];
}

function normalize(v: Float32Array): Float32Array {
  let sum = 0;
  for (const x of v) sum += x * x;
  const norm = Math.sqrt(sum);
  return norm > 0 ? v.map((x) => x / norm) : v;
}

function text(content: ChatCompletionRequestDto['messages'][number]['content']): string {
  if (content === null || content === undefined) return '';
  return typeof content === 'string' ? content : content.map((p) => p.text).join('');
}

/**
 * OpenAI messages as the inference layer's: tool calls and results paired by id (legacy
 * function calls and `function` messages by order and name); a result for no earlier call is a 400.
 */
function toChatMessages(dto: ChatCompletionRequestDto): ChatMessage[] {
  const calls = new Map<string, string>();
  const legacyOpen: { id: string; name: string }[] = [];
  return dto.messages.map((m, i): ChatMessage => {
    if (m.role === 'assistant') {
      const toolCalls = (m.tool_calls ?? []).map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments }));
      if (m.function_call) {
        const id = `call_${randomBytes(12).toString('hex')}`;
        legacyOpen.push({ id, name: m.function_call.name });
        toolCalls.push({ id, name: m.function_call.name, arguments: m.function_call.arguments });
      }
      for (const c of toolCalls) calls.set(c.id, c.name);
      return { role: 'assistant', content: text(m.content), ...(toolCalls.length ? { toolCalls } : {}) };
    }
    if (m.role === 'tool') {
      if (!calls.has(m.tool_call_id as string)) {
        throw invalid(`messages[${i}].tool_call_id`, `messages[${i}].tool_call_id ${JSON.stringify(m.tool_call_id)} answers no tool call of an earlier assistant message`);
      }
      return { role: 'tool', content: text(m.content), toolCallId: m.tool_call_id };
    }
    if (m.role === 'function') {
      const at = legacyOpen.findIndex((c) => c.name === m.name);
      if (at < 0) throw invalid(`messages[${i}].name`, `messages[${i}] is a function result for ${JSON.stringify(m.name)}, which no earlier assistant message called`);
      const [call] = legacyOpen.splice(at, 1);
      return { role: 'tool', content: text(m.content), toolCallId: call.id };
    }
    return { role: m.role, content: text(m.content) };
  });
}

/** The request's tools (or legacy functions) and how the model may use them. */
function toolsOf(dto: ChatCompletionRequestDto): { tools: ToolDefinition[]; choice: ToolChoice; legacy: boolean } {
  if (dto.tools && dto.functions) throw invalid('functions', 'send tools or the legacy functions, not both');
  const legacy = dto.functions !== undefined;
  const tools: ToolDefinition[] = (dto.tools?.map((t) => t.function) ?? dto.functions ?? []).map((f) => ({
    name: f.name,
    description: f.description,
    parameters: f.parameters,
  }));
  const twice = duplicateToolName(tools);
  if (twice !== undefined) throw invalid(legacy ? 'functions' : 'tools', `two tools are named ${JSON.stringify(twice)}`);
  const names = new Set(tools.map((t) => t.name));
  const raw = legacy ? dto.function_call : dto.tool_choice;
  const param = legacy ? 'function_call' : 'tool_choice';
  let choice: ToolChoice;
  if (raw === undefined) choice = { mode: tools.length ? 'auto' : 'none' };
  else if (typeof raw === 'string') choice = { mode: raw };
  else {
    const name = 'function' in raw ? raw.function.name : raw.name;
    if (!names.has(name)) throw invalid(param, `${param} names ${JSON.stringify(name)}, which is not one of the request's tools`);
    choice = { mode: 'function', name };
  }
  if ((choice.mode === 'required' || choice.mode === 'function') && tools.length === 0) throw invalid(param, `${param} asks for a tool call but the request has no tools`);
  return { tools, choice, legacy };
}
