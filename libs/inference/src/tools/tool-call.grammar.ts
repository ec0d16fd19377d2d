import { GbnfBuilder, gbnfLiteral } from '../grammar/json-schema.grammar';
import { ToolCallSyntax, ToolDefinition } from './tool.types';

/**
 * A grammar that makes the model call `tools` in `syntax`: the call prefix, one of the tools'
 * names, its arguments as JSON matching the tool's parameter schema, the suffix; with `parallel`
 * (and a syntax that has a parallel form), one or more calls. Nothing may precede the first call
 * (but the optional space) and the output ends after the last one: the generation then stops by
 * itself, and the arguments always parse.
 */
export function grammarForToolCalls(syntax: ToolCallSyntax, tools: readonly ToolDefinition[], parallel: boolean): string {
  if (tools.length === 0) throw new RangeError('no tools to call');
  const g = new GbnfBuilder();
  const lit = (text: string): string => (text ? gbnfLiteral(text) : '');
  const join = (...parts: string[]): string => parts.filter(Boolean).join(' ');
  const manyCalls = parallel && syntax.parallel !== null && !syntax.suffixEndsTurn;
  const call = (suffixOf: (name: string) => string): string =>
    g.rule(
      'call',
      tools
        .map((tool) => {
          const args = g.schema(tool.parameters ?? { type: 'object' });
          return `( ${join(lit(tool.name), lit(syntax.paramsPrefix), args, lit(suffixOf(tool.name)))} )`;
        })
        .join(' | '),
    );
  const suffix = (name: string): string => syntax.suffix.replaceAll('{{functionName}}', name);
  const space = syntax.optionalPrefixSpace ? '" "?' : '';
  if (!manyCalls) return g.build(join(space, lit(syntax.prefix), call(suffix)));
  const p = syntax.parallel as NonNullable<ToolCallSyntax['parallel']>;
  const one = g.rule('one-call', join(lit(syntax.prefix), call(suffix)));
  return g.build(join(space, lit(p.sectionPrefix), one, `( ${join(lit(p.betweenCalls), one)} )*`, lit(p.sectionSuffix)));
}
