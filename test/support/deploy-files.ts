import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './server-process';

export interface Instruction {
  readonly keyword: string;
  readonly args: string;
  readonly line: number;
}

export interface Stage {
  readonly from: string;
  readonly name: string | undefined;
  readonly instructions: Instruction[];
}

/** A Dockerfile as instructions (continuations joined, comments dropped), grouped by stage. */
export function parseDockerfile(text: string): { globalArgs: Map<string, string>; stages: Stage[] } {
  const instructions: Instruction[] = [];
  let pending = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trimEnd();
    if (!pending && (/^\s*#/.test(line) || !line.trim())) return;
    if (pending && /^\s*#/.test(line)) return;
    if (!pending) start = i + 1;
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' ';
      return;
    }
    const full = (pending + line).trim();
    pending = '';
    const m = /^(\w+)\s+([\s\S]*)$/.exec(full);
    if (m) instructions.push({ keyword: m[1].toUpperCase(), args: m[2].trim(), line: start });
  });
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      stages.push({ from: m![1], name: m![2], instructions: [] });
    } else if (stages.length === 0) {
      if (ins.keyword === 'ARG') {
        const [k, v = ''] = ins.args.split('=');
        globalArgs.set(k, v);
      }
    } else stages.at(-1)!.instructions.push(ins);
  }
  return { globalArgs, stages };
}

/** `${NAME}` replaced from the arguments. */
export function expand(value: string, args: Map<string, string>): string {
  return value.replace(/\$\{(\w+)\}/g, (_m, k: string) => args.get(k) ?? '');
}

/**
 * The stages a build of `target` (the last stage by default) depends on, with the build arguments:
 * FROM <stage> and COPY --from=<stage>, resolved the way BuildKit does.
 */
export function stagesUsed(file: ReturnType<typeof parseDockerfile>, buildArgs: Record<string, string>): Stage[] {
  const args = new Map(file.globalArgs);
  for (const [k, v] of Object.entries(buildArgs)) args.set(k, v);
  const byName = new Map(file.stages.filter((s) => s.name).map((s) => [s.name!, s]));
  const used = new Set<Stage>();
  const visit = (stage: Stage): void => {
    if (used.has(stage)) return;
    used.add(stage);
    const base = byName.get(expand(stage.from, args));
    if (base) visit(base);
    for (const ins of stage.instructions) {
      const from = /--from=(\S+)/.exec(ins.args)?.[1];
      if (ins.keyword === 'COPY' && from) {
        const dep = byName.get(expand(from, args));
        if (!dep) throw new Error(`COPY --from=${from} (line ${ins.line}) names no stage`);
        visit(dep);
      }
    }
  };
  visit(file.stages.at(-1)!);
  for (const stage of used) {
    const from = expand(stage.from, args);
    if (from.includes('${') || (!byName.has(from) && !/^[\w./-]+(:[\w.-]+)?(@sha256:[0-9a-f]+)?$/.test(from))) {
      throw new Error(`FROM ${stage.from} resolves to "${from}", neither a stage nor an image`);
    }
    if (!byName.has(from) && from.split(':')[0].split('/').length === 1 && !from.includes(':')) {
      throw new Error(`FROM ${from}: an image without a tag`);
    }
  }
  return [...used];
}

/** Whether .dockerignore keeps `path` out of the build context (last matching rule wins). */
export function dockerIgnored(path: string, rules: string[]): boolean {
  let ignored = false;
  for (const raw of rules) {
    const rule = raw.trim();
    if (!rule || rule.startsWith('#')) continue;
    const negate = rule.startsWith('!');
    const pattern = negate ? rule.slice(1) : rule;
    const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*/g, '\u0000').replace(/\*/g, '[^/]*').replace(/\u0000/g, '.*').replace(/\?/g, '[^/]')}(/.*)?$`);
    if (re.test(path)) ignored = !negate;
  }
  return ignored;
}

export const read = (rel: string): string => readFileSync(join(ROOT, rel), 'utf8');
export const exists = (rel: string): boolean => existsSync(join(ROOT, rel));
