import { join } from 'node:path';
import { Option, SubCommand } from 'nest-commander';
import { BUNDLED_MODEL, projectRoot } from '@app/common';
import { CHAT_TEMPLATES, ChatTemplateName, GgmlType, RerankerSynthMode, SYNTH_PRESETS, SynthShape, synthesizeModel, synthesizeReranker, synthParameters } from '@app/inference';
import { ProgressBar } from '../support/progress.bar';
import { BaseCommand } from '../base.command';
import { positiveInt } from '../support/options';

interface SynthOptions {
  preset?: keyof typeof SYNTH_PRESETS;
  out?: string;
  seed?: number;
  dim?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  ffn?: number;
  vocab?: number;
  context?: number;
  type?: 'q8_0' | 'f16' | 'f32';
  chatTemplate?: ChatTemplateName;
  reranker?: RerankerSynthMode;
  json?: boolean;
}

const TYPES = { q8_0: GgmlType.Q8_0, f16: GgmlType.F16, f32: GgmlType.F32 } as const;
/** Random-weight Llama GGUF for benchmarks: the work per token does not depend on the values. */
@SubCommand({ name: 'synth', description: 'Write a random-weight Llama GGUF (deterministic for a seed) for benchmarks' })
export class ModelSynthCommand extends BaseCommand {
  async run(_args: string[], o: SynthOptions): Promise<void> {
    if (o.reranker) return this.#reranker(o, o.reranker);
    const preset = SYNTH_PRESETS[o.preset ?? '110m'];
    if (!preset) throw new Error(`unknown preset ${o.preset}; use 110m or 1.1b`);
    const shape: SynthShape = {
      dim: o.dim ?? preset.dim,
      layers: o.layers ?? preset.layers,
      heads: o.heads ?? preset.heads,
      kvHeads: o.kvHeads ?? preset.kvHeads,
      ffn: o.ffn ?? preset.ffn,
      vocab: o.vocab ?? preset.vocab,
      context: o.context ?? preset.context,
      type: o.type ? TYPES[o.type] : preset.type,
    };
    const out = o.out ?? join(projectRoot(), 'models', `synth-${o.preset ?? '110m'}.gguf`);
    const started = Date.now();
    const bar = new ProgressBar('Writing tensors', !o.json);
    const bytes = synthesizeModel(out, shape, BUNDLED_MODEL, o.seed ?? 1, (done, total) => bar.update(done / total, `${done}/${total}`), o.chatTemplate);
    bar.done();
    const summary = {
      path: out,
      bytes,
      parameters: synthParameters(shape),
      shape: { ...shape, type: GgmlType[shape.type] },
      seed: o.seed ?? 1,
      chatTemplate: o.chatTemplate ?? null,
      ms: Date.now() - started,
    };
    process.stdout.write(
      o.json
        ? `${JSON.stringify(summary, null, 2)}\n`
        : `Wrote ${out}: ${(bytes / 1e6).toFixed(1)} MB, ${(summary.parameters / 1e6).toFixed(1)}M parameters, ${GgmlType[shape.type]}, seed ${summary.seed}, in ${summary.ms} ms\n`,
    );
  }

  /** A tiny reranking GGUF (fixed shape) for RERANK_MODEL_PATH: see synthesizeReranker. */
  #reranker(o: SynthOptions, mode: RerankerSynthMode): void {
    const shaped = [o.preset, o.dim, o.layers, o.heads, o.kvHeads, o.ffn, o.vocab, o.context, o.type, o.chatTemplate].some((v) => v !== undefined);
    if (shaped) throw new Error('--reranker writes a fixed tiny shape: it takes only --out, --seed and --json');
    const out = o.out ?? join(projectRoot(), 'models', `synth-reranker-${mode}.gguf`);
    const bytes = synthesizeReranker(out, BUNDLED_MODEL, mode, o.seed ?? 1);
    const summary = { path: out, bytes, reranker: mode, seed: o.seed ?? 1 };
    process.stdout.write(o.json ? `${JSON.stringify(summary, null, 2)}\n` : `Wrote ${out}: ${(bytes / 1e6).toFixed(2)} MB reranker (${mode} weights), seed ${summary.seed}\n`);
  }

  @Option({ flags: '--preset <name>', description: '110m (dim 768, 12 layers, Q8_0) or 1.1b (TinyLlama shape, F16); default 110m' })
  parsePreset(v: string): string {
    if (!(v in SYNTH_PRESETS)) throw new Error(`--preset must be one of ${Object.keys(SYNTH_PRESETS).join(', ')}`);
    return v;
  }
  @Option({ flags: '--out <path>', description: 'Output file (default models/synth-<preset>.gguf)' })
  parseOut(v: string): string {
    return v;
  }
  @Option({ flags: '--seed <n>', description: 'Seed; same seed, same bytes (default 1)' })
  parseSeed(v: string): number {
    return positiveInt(v);
  }
  @Option({ flags: '--dim <n>' }) parseDim(v: string): number { return positiveInt(v); }
  @Option({ flags: '--layers <n>' }) parseLayers(v: string): number { return positiveInt(v); }
  @Option({ flags: '--heads <n>' }) parseHeads(v: string): number { return positiveInt(v); }
  @Option({ flags: '--kv-heads <n>' }) parseKvHeads(v: string): number { return positiveInt(v); }
  @Option({ flags: '--ffn <n>' }) parseFfn(v: string): number { return positiveInt(v); }
  @Option({ flags: '--vocab <n>' }) parseVocab(v: string): number { return positiveInt(v); }
  @Option({ flags: '--context <n>' }) parseContext(v: string): number { return positiveInt(v); }
  @Option({ flags: '--type <t>', description: 'q8_0 | f16 | f32' })
  parseType(v: string): string {
    if (!(v in TYPES)) throw new Error('--type must be q8_0, f16 or f32');
    return v;
  }
  @Option({
    flags: '--chat-template <family>',
    description: `Write a model family's real chat template and its special tokens into the GGUF: ${Object.keys(CHAT_TEMPLATES).join(' | ')}`,
  })
  parseChatTemplate(v: string): string {
    if (!(v in CHAT_TEMPLATES)) throw new Error(`--chat-template must be one of ${Object.keys(CHAT_TEMPLATES).join(', ')}`);
    return v;
  }
  @Option({
    flags: '--reranker <weights>',
    description: 'Write a tiny reranking GGUF instead (for RERANK_MODEL_PATH): overlap (constructed: scores the share of document tokens found in the query) | random',
  })
  parseReranker(v: string): string {
    if (v !== 'overlap' && v !== 'random') throw new Error('--reranker must be overlap or random');
    return v;
  }
  @Option({ flags: '--json', description: 'Machine-readable output' })
  parseJson(): boolean {
    return true;
  }
}
