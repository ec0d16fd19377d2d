import { CONFIG_SPEC } from './app.config';

/** Markers of the generated part of docs/CONFIGURATION.md (`npm run docs:config` rewrites what is between them). */
export const CONFIG_DOC_BEGIN = '<!-- config-table:begin (generated from CONFIG_SPEC by `npm run docs:config`; edit libs/common/src/config/app.config.ts) -->';
export const CONFIG_DOC_END = '<!-- config-table:end -->';

const cell = (text: string): string => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** The reference tables, one per section of CONFIG_SPEC, in table order. */
export function renderConfigTables(): string {
  const out: string[] = [];
  let section = '';
  for (const [name, spec] of Object.entries(CONFIG_SPEC)) {
    if (spec.section !== section) {
      section = spec.section;
      if (out.length > 0) out.push('');
      out.push(`### ${spec.sectionTitle}`, '', '| variable | default | meaning |', '|---|---|---|');
    }
    out.push(`| \`${name}\` | ${cell(spec.defaultText)} | ${cell(spec.doc)} |`);
  }
  return out.join('\n');
}

/** `doc` with its generated part replaced by the current tables; throws when the markers are missing. */
export function updateConfigDoc(doc: string): string {
  const begin = doc.indexOf(CONFIG_DOC_BEGIN);
  const end = doc.indexOf(CONFIG_DOC_END);
  if (begin < 0 || end < begin) throw new Error('docs/CONFIGURATION.md lacks the config-table markers');
  return `${doc.slice(0, begin + CONFIG_DOC_BEGIN.length)}\n\n${renderConfigTables()}\n\n${doc.slice(end)}`;
}
