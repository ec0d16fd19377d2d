import type { ChatMessage, ToolCall } from '@app/inference';
import { invalidField as invalid, isObject, textField as text, unsupportedField as unsupported } from '../generation/request-fields';
import { TOOL_NAME } from '../generation/tool-fields';

/** An input or output item of the Responses API, as stored and returned (plain JSON). */
export type ResponseItem = Record<string, unknown>;


/** Content parts a message may hold: text in, text out, a refusal replayed; files and images are refused. */
function parts(value: unknown, param: string, role: string): ResponseItem[] {
  if (typeof value === 'string') {
    text(value, param);
    return [role === 'assistant' ? { type: 'output_text', text: value, annotations: [] } : { type: 'input_text', text: value }];
  }
  if (!Array.isArray(value) || value.length > 64) throw invalid(param, `${param} must be a string or an array of at most 64 content parts`);
  return value.map((part, j) => {
    const at = `${param}[${j}]`;
    if (!isObject(part)) throw invalid(at, `${at} must be an object`);
    switch (part.type) {
      case 'input_text':
        return { type: 'input_text', text: text(part.text, `${at}.text`) };
      case 'output_text':
        return { type: 'output_text', text: text(part.text, `${at}.text`), annotations: [] };
      case 'refusal':
        return { type: 'refusal', refusal: text(part.refusal, `${at}.refusal`) };
      case 'input_image':
      case 'input_file':
      case 'input_audio':
        throw unsupported(at, `${at} is ${part.type}: only text input is supported`);
      default:
        throw invalid(`${at}.type`, `${at}.type must be input_text, output_text or refusal (got ${JSON.stringify(part.type)})`);
    }
  });
}

/**
 * The request's `input` as stored items: a string becomes one user message; messages get
 * `type: "message"` and text parts; each item keeps the id it came with or gets `idFor(i)`.
 * Shapes are checked here, naming the bad field (`input[2].content[0].type`). `item_reference`
 * items are left for the caller to resolve.
 */
export function normalizeInput(input: string | readonly unknown[], idFor: (index: number, kind: 'msg' | 'fc' | 'fco') => string): ResponseItem[] {
  if (typeof input === 'string') return [{ type: 'message', id: idFor(0, 'msg'), role: 'user', content: [{ type: 'input_text', text: input }] }];
  return input.map((raw, i): ResponseItem => {
    const at = `input[${i}]`;
    if (!isObject(raw)) throw invalid(at, `${at} must be an object`);
    const id = typeof raw.id === 'string' && raw.id.length > 0 && raw.id.length <= 256 ? raw.id : undefined;
    const type = raw.type ?? (raw.role !== undefined ? 'message' : undefined);
    switch (type) {
      case 'message': {
        const role = raw.role;
        if (role !== 'user' && role !== 'system' && role !== 'developer' && role !== 'assistant') {
          throw invalid(`${at}.role`, `${at}.role must be user, system, developer or assistant (got ${JSON.stringify(role)})`);
        }
        return { type: 'message', id: id ?? idFor(i, 'msg'), role, content: parts(raw.content, `${at}.content`, role), ...(role === 'assistant' ? { status: 'completed' } : {}) };
      }
      case 'function_call': {
        const callId = text(raw.call_id, `${at}.call_id`);
        const name = text(raw.name, `${at}.name`);
        if (!TOOL_NAME.test(name)) throw invalid(`${at}.name`, `${at}.name must be 1-64 letters, digits, _ or -`);
        return { type: 'function_call', id: id ?? idFor(i, 'fc'), call_id: callId, name, arguments: text(raw.arguments, `${at}.arguments`), status: 'completed' };
      }
      case 'function_call_output': {
        const callId = text(raw.call_id, `${at}.call_id`);
        const output = typeof raw.output === 'string' ? text(raw.output, `${at}.output`) : outputText(parts(raw.output, `${at}.output`, 'user'));
        return { type: 'function_call_output', id: id ?? idFor(i, 'fco'), call_id: callId, output, status: 'completed' };
      }
      case 'item_reference':
        return { type: 'item_reference', id: text(raw.id, `${at}.id`) };
      case 'reasoning':
        throw unsupported(`${at}.type`, `${at} is a reasoning item: the served model has no reasoning to replay`);
      default:
        throw unsupported(`${at}.type`, `${at}.type ${JSON.stringify(type)} is not supported: use message, function_call, function_call_output or item_reference`);
    }
  });
}

function outputText(content: readonly ResponseItem[]): string {
  return content.map((p) => (p.type === 'refusal' ? String(p.refusal) : String(p.text ?? ''))).join('');
}

/**
 * Items (the previous responses' conversation and output, then this input) as chat messages:
 * `instructions` first as the system message; an assistant message and the function calls that
 * follow it are one assistant turn; a function_call_output must answer a call made earlier.
 */
export function itemsToMessages(items: readonly ResponseItem[], instructions: string | undefined, firstInputIndex: number): ChatMessage[] {
  const messages: ChatMessage[] = instructions ? [{ role: 'system', content: instructions }] : [];
  const calls = new Set<string>();
  let turn: { content: string; toolCalls: ToolCall[] } | null = null;
  const close = (): void => {
    if (turn) messages.push({ role: 'assistant', content: turn.content, ...(turn.toolCalls.length ? { toolCalls: turn.toolCalls } : {}) });
    turn = null;
  };
  items.forEach((item, i) => {
    if (item.type === 'message' && item.role === 'assistant') {
      close();
      turn = { content: outputText(item.content as ResponseItem[]), toolCalls: [] };
    } else if (item.type === 'function_call') {
      turn ??= { content: '', toolCalls: [] };
      turn.toolCalls.push({ id: String(item.call_id), name: String(item.name), arguments: String(item.arguments) });
      calls.add(String(item.call_id));
    } else if (item.type === 'function_call_output') {
      close();
      if (!calls.has(String(item.call_id))) {
        const param = `input[${i - firstInputIndex}].call_id`;
        throw invalid(param, `${param} ${JSON.stringify(item.call_id)} answers no function_call of an earlier item`);
      }
      messages.push({ role: 'tool', content: String(item.output), toolCallId: String(item.call_id) });
    } else if (item.type === 'message') {
      close();
      messages.push({ role: item.role as ChatMessage['role'], content: outputText(item.content as ResponseItem[]) });
    }
  });
  close();
  return messages;
}

/** The text of a response's output (the openai SDK's `output_text`). */
export function outputTextOf(output: readonly ResponseItem[]): string {
  return output
    .filter((o) => o.type === 'message')
    .flatMap((o) => o.content as ResponseItem[])
    .filter((p) => p.type === 'output_text')
    .map((p) => String(p.text))
    .join('');
}
