import { Injectable, Logger } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { Reply } from '@app/common';
import { invalidField as invalid, unsupportedField as unsupported } from '../generation/request-fields';
import { SamplingParams } from '@app/batching';
import { ToolChoice, ToolDefinition } from '@app/inference';
import { ModelAccessService } from '../models/model-access.service';
import { ResponseStoreService, StoredResponse } from '@app/response-store';
import { chatGenerationInput, duplicateToolName, toolUse } from '../generation/chat.generation';
import { GenerationContext, GenerationPipeline } from '../generation/generation.pipeline';
import { ResponseEcho, ResponsesPresenter } from '../generation/presenters/responses.presenter';
import { InputItemsQueryDto, ResponsesRequestDto } from './responses.dto';
import { ResponsesErrorCode, ResponsesException } from './responses.exception';
import { itemsToMessages, normalizeInput, ResponseItem } from './responses.input';

/** Item ids carry their response's id: `msg_<hex>_3` is output item 3 of `resp_<hex>`, `msg_<hex>_i0` its input item 0. */
const ITEM_ID = /^(?:msg|fc|fco)_([0-9a-f]{32})_i?\d+$/;

/** Whose stored responses a request sees: the key's id (static keys and AUTH_DISABLED have theirs too). */
function ownerOf(context: Pick<GenerationContext, 'caller'>): string {
  return context.caller?.id ?? 'anonymous';
}

/**
 * OpenAI's Responses API on the generation pipeline: input items (and the stored conversation of
 * `previous_response_id`) become the chat messages, function tools and `text.format` the chat's
 * tools and response format; the answer is rendered by the Responses presenter and, with `store`
 * (the default), kept in the key store's database for the key that made it.
 */
@Injectable()
export class ResponsesService {
  readonly #logger = new Logger('Responses');

  constructor(
    private readonly models: ModelAccessService,
    private readonly pipeline: GenerationPipeline,
    private readonly store: ResponseStoreService,
  ) {}

  async create(dto: ResponsesRequestDto, context: Omit<GenerationContext, 'stream'>): Promise<Reply> {
    if (dto.text?.verbosity !== undefined) throw unsupported('text.verbosity', 'text.verbosity is not supported: the served model has no verbosity setting');
    if (dto.truncation === 'auto') throw unsupported('truncation', 'truncation "auto" is not implemented: a conversation that does not fit the context is a 400 (truncation "disabled")');
    if (dto.metadata !== undefined) checkMetadata(dto.metadata);
    const owner = ownerOf(context);
    const hex = randomBytes(16).toString('hex');
    const id = `resp_${hex}`;
    const previous = dto.previous_response_id ? await this.#previous(dto.previous_response_id, owner) : null;
    const input = await this.#resolve(normalizeInput(dto.input, (i, kind) => `${kind}_${hex}_i${i}`), owner);
    const before = previous ? [...previous.context, ...((previous.response.output as ResponseItem[]) ?? [])] : [];
    const conversation = [...(before as ResponseItem[]), ...input];
    const messages = itemsToMessages(conversation, dto.instructions, before.length);

    const tools: ToolDefinition[] = (dto.tools ?? []).map((t) => ({ name: t.name, description: t.description, parameters: t.parameters }));
    const twice = duplicateToolName(tools);
    if (twice !== undefined) throw invalid('tools', `two tools are named ${JSON.stringify(twice)}`);
    const choice = toolChoice(dto.tool_choice, tools);
    const format = dto.text?.format && dto.text.format.type !== 'text' ? dto.text.format : undefined;
    if (toolUse(tools, choice).forced && format) {
      throw unsupported('text.format', 'text.format cannot be combined with a forced tool call (tool_choice required or a named function)');
    }
    const logprobs = dto.include?.includes('message.output_text.logprobs') ? (dto.top_logprobs ?? 0) : undefined;
    const routed = await this.models.acquire(dto.model, context.caller, 'chat');
    const model = routed.handle;
    const d = model.defaults;
    const sampling: SamplingParams = { temperature: dto.temperature ?? d.temperature ?? 1, topP: dto.top_p ?? d.top_p, topK: d.top_k, minP: d.min_p, logprobs };
    if (format) sampling.constraint = await model.constraintFor(format.type === 'json_object' ? 'json' : (format.schema as object));
    const generation = await chatGenerationInput(routed, {
      messages,
      field: (i) => (i === 0 && dto.instructions ? 'instructions' : 'input'),
      tools,
      choice,
      parallelToolCalls: dto.parallel_tool_calls !== false,
      sampling,
      format: format ? JSON.stringify(format) : undefined,
      stop: [],
      maxTokens: dto.max_output_tokens ?? model.defaults.max_tokens,
      retrieval: dto.retrieval,
    });
    const store = dto.store !== false;
    const echo: ResponseEcho = {
      id,
      created_at: Math.floor(Date.now() / 1000),
      model: model.id,
      instructions: dto.instructions ?? null,
      max_output_tokens: dto.max_output_tokens ?? null,
      metadata: dto.metadata ?? {},
      parallel_tool_calls: dto.parallel_tool_calls !== false,
      previous_response_id: previous?.id ?? null,
      store,
      temperature: dto.temperature ?? 1,
      text: { format: dto.text?.format ?? { type: 'text' } },
      tool_choice: dto.tool_choice ?? 'auto',
      tools: (dto.tools ?? []).map((t) => ({ type: 'function', name: t.name, description: t.description ?? null, parameters: t.parameters ?? null, strict: t.strict ?? true })),
      top_logprobs: dto.top_logprobs ?? 0,
      top_p: dto.top_p ?? 1,
      truncation: 'disabled',
      user: dto.user ?? null,
    };
    const presenter = new ResponsesPresenter(echo, { topLogprobs: logprobs });
    const reply = await this.pipeline.run(generation, { ...context, stream: dto.stream === true }, presenter);
    if (!store) return reply;
    const save = (): Promise<void> => this.#save({ id, keyId: owner, previousId: previous?.id ?? null, input, context: conversation, response: presenter.response! });
    if (reply.kind === 'json') {
      await save();
      return reply;
    }
    // Stored before the client sees the end, so that its next request can continue from it.
    const frames = reply.events;
    return {
      ...reply,
      events: (async function* () {
        for await (const frame of frames) {
          const type = (frame as { event?: string }).event;
          if (type === 'response.completed' || type === 'response.incomplete') await save();
          yield frame;
        }
      })(),
    };
  }

  async get(id: string, context: Pick<GenerationContext, 'caller'>): Promise<object> {
    return (await this.#find(id, ownerOf(context))).response;
  }

  async delete(id: string, context: Pick<GenerationContext, 'caller'>): Promise<object> {
    if (!(await this.store.delete(id, ownerOf(context)))) throw notFound(id);
    return { id, object: 'response.deleted', deleted: true };
  }

  /** The request's own input items (not the earlier responses'), newest first by default, paged like OpenAI's lists. */
  async inputItems(id: string, query: InputItemsQueryDto, context: Pick<GenerationContext, 'caller'>): Promise<object> {
    const stored = await this.#find(id, ownerOf(context));
    let items = [...(stored.input as ResponseItem[])];
    if ((query.order ?? 'desc') === 'desc') items.reverse();
    if (query.after !== undefined) {
      const at = items.findIndex((i) => i.id === query.after);
      if (at < 0) throw new ResponsesException(ResponsesErrorCode.ItemNotFound, `No input item ${JSON.stringify(query.after)} in response ${id}`, { param: 'after' });
      items = items.slice(at + 1);
    }
    const limit = Number(query.limit ?? 20);
    const page = items.slice(0, limit);
    return { object: 'list', data: page, first_id: page[0]?.id ?? null, last_id: page.at(-1)?.id ?? null, has_more: items.length > limit };
  }

  async #find(id: string, owner: string): Promise<StoredResponse> {
    const stored = await this.#read(() => this.store.find(id, owner));
    if (!stored) throw notFound(id);
    return stored;
  }

  async #previous(id: string, owner: string): Promise<StoredResponse> {
    const stored = await this.#read(() => this.store.find(id, owner));
    if (!stored) {
      throw new ResponsesException(ResponsesErrorCode.PreviousResponseNotFound, `Previous response with id '${id}' not found (it may have expired, been deleted, or belong to another key)`, {
        param: 'previous_response_id',
      });
    }
    return stored;
  }

  /** `item_reference` items replaced by the stored items they name (this key's responses only). */
  async #resolve(items: ResponseItem[], owner: string): Promise<ResponseItem[]> {
    const responses = new Map<string, StoredResponse | null>();
    const out: ResponseItem[] = [];
    for (const [i, item] of items.entries()) {
      if (item.type !== 'item_reference') {
        out.push(item);
        continue;
      }
      const ref = String(item.id);
      const responseId = ITEM_ID.exec(ref)?.[1];
      let found: ResponseItem | undefined;
      if (responseId) {
        if (!responses.has(responseId)) responses.set(responseId, await this.#read(() => this.store.find(`resp_${responseId}`, owner)));
        const stored = responses.get(responseId);
        found = [...((stored?.input ?? []) as ResponseItem[]), ...(((stored?.response.output ?? []) as ResponseItem[]))].find((x) => x.id === ref);
      }
      if (!found) throw new ResponsesException(ResponsesErrorCode.ItemNotFound, `input[${i}] references item ${JSON.stringify(ref)}, which is not an item of a stored response of this key`, { param: `input[${i}].id` });
      out.push(found);
    }
    return out;
  }

  async #save(response: Omit<StoredResponse, 'createdAt' | 'expiresAt'>): Promise<void> {
    try {
      await this.store.save(response);
    } catch (err) {
      this.#logger.error(`Storing response ${response.id} failed: ${(err as Error).message}`);
      throw new ResponsesException(ResponsesErrorCode.StoreUnavailable, 'The response could not be stored (the database is unreachable); retry, or send store: false');
    }
  }

  async #read<T>(read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (err) {
      this.#logger.error(`Reading stored responses failed: ${(err as Error).message}`);
      throw new ResponsesException(ResponsesErrorCode.StoreUnavailable, 'Stored responses cannot be read (the database is unreachable); retry shortly');
    }
  }
}

function notFound(id: string): ResponsesException {
  return new ResponsesException(ResponsesErrorCode.ResponseNotFound, `No response with id '${id}' (it may have expired, been deleted, or belong to another key)`, { param: 'response_id' });
}

/** OpenAI's tool_choice as the inference layer's. */
function toolChoice(raw: ResponsesRequestDto['tool_choice'], tools: readonly ToolDefinition[]): ToolChoice {
  let choice: ToolChoice;
  if (raw === undefined) choice = { mode: tools.length ? 'auto' : 'none' };
  else if (typeof raw === 'string') choice = { mode: raw };
  else {
    if (!tools.some((t) => t.name === raw.name)) throw invalid('tool_choice', `tool_choice names ${JSON.stringify(raw.name)}, which is not one of the request's tools`);
    choice = { mode: 'function', name: raw.name };
  }
  if ((choice.mode === 'required' || choice.mode === 'function') && tools.length === 0) throw invalid('tool_choice', 'tool_choice asks for a tool call but the request has no tools');
  return choice;
}

/** OpenAI's metadata: at most 16 pairs, keys up to 64 characters, string values up to 512. */
function checkMetadata(metadata: Record<string, unknown>): void {
  const entries = Object.entries(metadata);
  if (entries.length > 16 || entries.some(([k, v]) => k.length > 64 || typeof v !== 'string' || v.length > 512)) {
    throw invalid('metadata', 'metadata must be at most 16 pairs of keys up to 64 characters and string values up to 512 characters');
  }
}
