import { LazyModuleLoader } from '@nestjs/core';
import { Command, Option, SubCommand } from 'nest-commander';
import { InferenceModule, InferenceService, ModelDescriptor } from '@app/inference';
import { BaseCommand } from './base.command';
import { ModelSynthCommand } from './bench/model-synth.command';
import { ProgressBar } from './support/progress.bar';
import { ModelListCommand, ModelLoadCommand, ModelPullCommand, ModelRmCommand, ModelUnloadCommand } from './models/model.command';

@SubCommand({ name: 'info', description: 'Load the default model (MODEL_PATH, or DEFAULT_MODEL of the registry) in this process and print its descriptor' })
export class ModelInfoCommand extends BaseCommand {
  constructor(private readonly lazy: LazyModuleLoader) {
    super();
  }

  async run(_args: string[], options: { json?: boolean }): Promise<void> {
    // Loaded on demand: the other commands (cache, keys...) must not load the model.
    const inference = (await this.lazy.load(() => InferenceModule)).get(InferenceService);
    const bar = new ProgressBar('Loading model', !options.json);
    const stop = inference.onLoadProgress((f) => bar.update(f));
    try {
      const d = await inference.whenReady();
      stop();
      bar.done();
      process.stdout.write(options.json ? `${JSON.stringify(d, null, 2)}\n` : formatDescriptor(d));
    } finally {
      // Lazily loaded modules get no lifecycle hooks: release the model ourselves.
      await inference.onApplicationShutdown();
    }
  }

  @Option({ flags: '--json', description: 'Machine-readable output' })
  parseJson(): boolean {
    return true;
  }
}

@Command({
  name: 'model',
  description: 'Model commands: the registry of a running server (list, load, unload), downloads (pull, rm), info, synth',
  subCommands: [ModelListCommand, ModelLoadCommand, ModelUnloadCommand, ModelPullCommand, ModelRmCommand, ModelInfoCommand, ModelSynthCommand],
})
export class ModelCommand extends BaseCommand {
  async run(): Promise<void> {
    this.command.help();
  }
}

export function formatDescriptor(d: ModelDescriptor): string {
  const rows: [string, string][] = [
    ['id', d.id],
    ['kind', d.kind],
    ['path', d.path],
    ['size', `${(d.sizeBytes / 1e6).toFixed(2)} MB`],
    ['architecture', d.architecture],
    ['parameters', d.parameters === null ? 'unknown' : d.parameters.toLocaleString('en-US')],
    ['layers', String(d.layers)],
    ['embedding length', String(d.embeddingLength)],
    ['vocabulary', d.vocabularySize.toLocaleString('en-US')],
    ['train context', String(d.trainContextSize)],
    ['context per slot', String(d.contextSize)],
    ['slots', String(d.slots)],
    ['threads', String(d.threads)],
    ['engine', d.engine === 'addon' ? `engine addon (${d.engineNote.replace(/^engine addon: /, '')})` : `node-llama-cpp binding (${d.engineNote})`],
    ['batch size', String(d.batchSize)],
    ['KV cache', `${d.kvCacheTypeK} / ${d.kvCacheTypeV}, flash attention ${d.flashAttention}`],
    ['backend', d.gpu ? `${d.gpu} (${d.gpuLayers}/${d.layers} layers offloaded)` : 'CPU'],
    ['chat template', d.chatTemplate],
    ['load time', `${d.loadMs} ms`],
  ];
  if (d.gpuFallbackReason) rows.push(['GPU fallback', d.gpuFallbackReason]);
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n';
}
