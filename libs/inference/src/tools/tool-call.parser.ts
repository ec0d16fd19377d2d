import { ToolCallSyntax } from './tool.types';

/** What the parser finds in the model's text, in order. */
export type ToolParseEvent =
  | { readonly type: 'text'; readonly text: string }
  | { readonly type: 'call-start'; readonly index: number; readonly name: string }
  | { readonly type: 'call-arguments'; readonly index: number; readonly delta: string }
  | { readonly type: 'call-end'; readonly index: number };

type State = 'text' | 'name' | 'arguments' | 'suffix' | 'between';

/**
 * Splits a model's output, as it streams, into text and function calls written in `syntax`.
 * Text that may be the start of a call is held back until it is known; arguments stream as they
 * come (their end is found by following the JSON, so a suffix inside a string does not end them).
 * Lenient where models are: whitespace around the syntax's parts, the call prefix without the
 * section prefix.
 */
export class ToolCallParser {
  readonly #syntax: ToolCallSyntax;
  readonly #triggers: string[];
  #state: State = 'text';
  #buffer = '';
  #calls = 0;
  #name = '';
  #json = { depth: 0, inString: false, escape: false, started: false, scalar: false };

  constructor(syntax: ToolCallSyntax) {
    this.#syntax = syntax;
    const section = syntax.parallel?.sectionPrefix ?? '';
    this.#triggers = [...new Set([section.trim() ? section : '', syntax.prefix].filter((t) => t.trim().length > 0))];
  }

  /** Calls found so far (started). */
  get calls(): number {
    return this.#calls;
  }

  push(text: string): ToolParseEvent[] {
    this.#buffer += text;
    const out: ToolParseEvent[] = [];
    while (this.#step(out, false));
    return out;
  }

  /** The end of the output: held text is released; a call cut short is closed as it is. */
  flush(): ToolParseEvent[] {
    const out: ToolParseEvent[] = [];
    while (this.#step(out, true));
    if (this.#state === 'name' && this.#name + this.#buffer) {
      // Cut off before its arguments: a call with what there is.
      out.push({ type: 'call-start', index: this.#calls++, name: (this.#name + this.#buffer).trim() });
      out.push({ type: 'call-end', index: this.#calls - 1 });
    } else if (this.#state === 'arguments' || this.#state === 'suffix') {
      if (this.#state === 'arguments' && this.#buffer) out.push({ type: 'call-arguments', index: this.#calls - 1, delta: this.#buffer });
      out.push({ type: 'call-end', index: this.#calls - 1 });
    } else if (this.#buffer && this.#state === 'text') {
      out.push({ type: 'text', text: this.#buffer });
    }
    this.#buffer = '';
    this.#state = 'text';
    return out;
  }

  /** One transition; false when it needs more text. */
  #step(out: ToolParseEvent[], end: boolean): boolean {
    const s = this.#syntax;
    switch (this.#state) {
      case 'text': {
        let at = -1;
        let trigger = '';
        for (const t of this.#triggers) {
          const i = this.#buffer.indexOf(t);
          if (i >= 0 && (at < 0 || i < at)) [at, trigger] = [i, t];
        }
        if (at < 0) {
          const held = s.optionalPrefixSpace ? [...this.#triggers, ...this.#triggers.map((t) => ` ${t}`)] : this.#triggers;
          const keep = end ? 0 : partialTail(this.#buffer, held);
          const text = this.#buffer.slice(0, this.#buffer.length - keep);
          if (text) out.push({ type: 'text', text });
          this.#buffer = this.#buffer.slice(this.#buffer.length - keep);
          return false;
        }
        let before = this.#buffer.slice(0, at);
        if (s.optionalPrefixSpace && before.endsWith(' ')) before = before.slice(0, -1);
        if (before) out.push({ type: 'text', text: before });
        this.#buffer = this.#buffer.slice(at + trigger.length);
        // A section prefix is followed by the first call's prefix.
        this.#state = trigger === s.prefix ? 'name' : 'between';
        this.#name = '';
        return true;
      }
      case 'between': {
        const rest = this.#buffer.trimStart();
        const prefix = s.prefix.trimStart();
        if (rest.startsWith(prefix)) {
          this.#buffer = rest.slice(prefix.length);
          this.#state = 'name';
          this.#name = '';
          return true;
        }
        for (const part of [s.parallel?.betweenCalls ?? '', s.parallel?.sectionSuffix ?? ''].map((p) => p.trim()).filter(Boolean)) {
          if (rest.startsWith(part)) {
            this.#buffer = rest.slice(part.length);
            return true;
          }
        }
        const candidates = [prefix, s.parallel?.betweenCalls.trim() ?? '', s.parallel?.sectionSuffix.trim() ?? ''].filter(Boolean);
        if (!end && (rest.length === 0 || candidates.some((c) => c.startsWith(rest)))) {
          this.#buffer = rest;
          return false;
        }
        // Anything else after the calls is text.
        this.#buffer = rest;
        this.#state = 'text';
        return rest.length > 0;
      }
      case 'name': {
        const at = this.#buffer.indexOf(s.paramsPrefix);
        if (at < 0) {
          if (end) return false;
          const keep = partialTail(this.#buffer, [s.paramsPrefix]);
          this.#name += this.#buffer.slice(0, this.#buffer.length - keep);
          this.#buffer = this.#buffer.slice(this.#buffer.length - keep);
          return false;
        }
        this.#name = (this.#name + this.#buffer.slice(0, at)).trim();
        this.#buffer = this.#buffer.slice(at + s.paramsPrefix.length);
        out.push({ type: 'call-start', index: this.#calls++, name: this.#name });
        this.#json = { depth: 0, inString: false, escape: false, started: false, scalar: false };
        this.#state = 'arguments';
        return true;
      }
      case 'arguments': {
        const done = this.#scanJson();
        // Empty or scalar arguments: held until the suffix shows where they end.
        if (done === -2) return false;
        const taken = done < 0 ? this.#buffer.length : done;
        const delta = this.#buffer.slice(0, taken);
        if (delta) out.push({ type: 'call-arguments', index: this.#calls - 1, delta });
        this.#buffer = this.#buffer.slice(taken);
        if (done < 0) return false;
        this.#state = 'suffix';
        return true;
      }
      case 'suffix': {
        const suffix = s.suffix.replaceAll('{{functionName}}', this.#name).trim();
        const rest = this.#buffer.trimStart();
        if (suffix && rest.startsWith(suffix)) this.#buffer = rest.slice(suffix.length);
        else if (suffix && !end && suffix.startsWith(rest)) {
          this.#buffer = rest;
          return false;
        }
        out.push({ type: 'call-end', index: this.#calls - 1 });
        this.#state = 'between';
        return true;
      }
    }
  }

  /**
   * Index just past the end of the arguments' JSON value in the buffer, -1 if not there yet, -2
   * for arguments that are not an object or array and whose end (the suffix) is not there yet.
   */
  #scanJson(): number {
    const j = this.#json;
    const b = this.#buffer;
    for (let i = 0; i < b.length; i++) {
      const c = b[i];
      if (!j.started) {
        if (/\s/.test(c)) continue;
        j.started = true;
        if (c !== '{' && c !== '[') {
          // No object: empty arguments (the suffix follows) or a bare scalar up to the suffix.
          j.scalar = true;
        }
      }
      if (j.scalar) {
        const suffix = this.#syntax.suffix.replaceAll('{{functionName}}', this.#name).trim();
        const at = suffix ? b.indexOf(suffix, i) : -1;
        return at < 0 ? -2 : at;
      }
      if (j.inString) {
        if (j.escape) j.escape = false;
        else if (c === '\\') j.escape = true;
        else if (c === '"') j.inString = false;
        continue;
      }
      if (c === '"') j.inString = true;
      else if (c === '{' || c === '[') j.depth++;
      else if (c === '}' || c === ']') {
        j.depth--;
        if (j.depth === 0) return i + 1;
      }
    }
    return -1;
  }
}

/** Length of the longest end of `text` that is a proper start of one of `words`. */
function partialTail(text: string, words: readonly string[]): number {
  const longest = Math.max(0, ...words.map((w) => w.length));
  for (let n = Math.min(longest - 1, text.length); n > 0; n--) {
    const tail = text.slice(text.length - n);
    if (words.some((w) => w.startsWith(tail))) return n;
  }
  return 0;
}
