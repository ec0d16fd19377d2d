import type { ChatMessage, ToolCall } from '@app/inference';
import { invalidField as invalid, isObject, textField as text, unsupportedField as unsupported } from '../generation/request-fields';

/** Blocks this server has no way to honour: images, documents, thinking, server tools. */
const REFUSED_BLOCKS: Record<string, string> = {
  image: 'only text input is supported',
  document: 'only text input is supported',
  search_result: 'search result blocks (citations) are not supported',
  thinking: 'the served model has no extended thinking to replay',
  redacted_thinking: 'the served model has no extended thinking to replay',
  server_tool_use: 'server tools are not available',
  web_search_tool_result: 'server tools are not available',
  container_upload: 'code-execution containers are not available',
};

/** A tool's input as the arguments text the chat template gets (JSON; a string is taken as it is). */
function argumentsOf(input: unknown): string {
  return typeof input === 'string' ? input : JSON.stringify(input ?? {});
}

/** A tool_result's content: a string or text blocks (an error result is marked, so the model sees it failed). */
function resultText(block: Record<string, unknown>, param: string): string {
  const content = block.content;
  let out: string;
  if (content === undefined || content === null) out = '';
  else if (typeof content === 'string') out = text(content, `${param}.content`);
  else if (Array.isArray(content)) {
    out = content
      .map((b, k) => {
        const at = `${param}.content[${k}]`;
        if (!isObject(b)) throw invalid(at, `${at} must be an object`);
        if (b.type !== 'text') throw unsupported(`${at}.type`, `${at} is ${JSON.stringify(b.type)}: tool results may only hold text`);
        return text(b.text, `${at}.text`);
      })
      .join('');
  } else throw invalid(`${param}.content`, `${param}.content must be a string or an array of text blocks`);
  return block.is_error === true ? `Error: ${out}` : out;
}

/**
 * Anthropic's `system` and `messages` as chat messages: text blocks join into the message's text;
 * an assistant's `tool_use` blocks are its tool calls (input as JSON arguments); a user's
 * `tool_result` blocks are tool messages, each answering a `tool_use` of an earlier assistant
 * message (else a 400 naming it). Other block types are refused, naming the block.
 */
export function anthropicToChatMessages(system: string | readonly { text: string }[] | undefined, messages: readonly Record<string, unknown>[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  const systemText = typeof system === 'string' ? system : system?.map((b) => b.text).join('\n');
  if (systemText) out.push({ role: 'system', content: systemText });
  const calls = new Set<string>();
  messages.forEach((m, i) => {
    const at = `messages[${i}]`;
    const role = m.role;
    if (role !== 'user' && role !== 'assistant' && role !== 'system') throw invalid(`${at}.role`, `${at}.role must be "user" or "assistant" (got ${JSON.stringify(role)})`);
    const content = m.content;
    if (typeof content === 'string') {
      out.push({ role, content: text(content, `${at}.content`) });
      return;
    }
    if (!Array.isArray(content) || content.length > 256) throw invalid(`${at}.content`, `${at}.content must be a string or an array of at most 256 content blocks`);
    let pending = '';
    const toolCalls: ToolCall[] = [];
    const flush = (): void => {
      if (pending) out.push({ role: role === 'assistant' ? 'assistant' : role, content: pending });
      pending = '';
    };
    content.forEach((block, j) => {
      const b = `${at}.content[${j}]`;
      if (!isObject(block)) throw invalid(b, `${b} must be an object`);
      const type = block.type;
      if (type === 'text') {
        pending += text(block.text, `${b}.text`);
      } else if (type === 'tool_use' && role === 'assistant') {
        const id = text(block.id, `${b}.id`);
        const name = text(block.name, `${b}.name`);
        if (!/^[a-zA-Z0-9_-]{1,64}$/.test(name)) throw invalid(`${b}.name`, `${b}.name must be 1-64 letters, digits, _ or -`);
        toolCalls.push({ id, name, arguments: argumentsOf(block.input) });
        calls.add(id);
      } else if (type === 'tool_result' && role === 'user') {
        flush();
        const id = text(block.tool_use_id, `${b}.tool_use_id`);
        if (!calls.has(id)) throw invalid(`${b}.tool_use_id`, `${b}.tool_use_id ${JSON.stringify(id)} answers no tool_use block of an earlier assistant message`);
        out.push({ role: 'tool', content: resultText(block, b), toolCallId: id });
      } else if (typeof type === 'string' && REFUSED_BLOCKS[type]) {
        throw unsupported(`${b}.type`, `${b} is a ${type} block: ${REFUSED_BLOCKS[type]}`);
      } else {
        const allowed = role === 'assistant' ? 'text or tool_use' : 'text or tool_result';
        throw invalid(`${b}.type`, `${b}.type must be ${allowed} in a ${role} message (got ${JSON.stringify(type)})`);
      }
    });
    if (role === 'assistant') out.push({ role: 'assistant', content: pending, ...(toolCalls.length ? { toolCalls } : {}) });
    else flush();
  });
  return out;
}
