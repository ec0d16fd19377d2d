export * from './inference.module';
export * from './inference.service';
export * from './inference.types';
export * from './inference.exception';
export { FALLBACK_CHAT_TEMPLATE } from './llama.adapter';
export { GgmlType } from './gguf/gguf.format';
export { readGgufMetadata } from './gguf/gguf.reader';
export { SYNTH_PRESETS, synthesizeModel, synthParameters, validateShape } from './gguf/model.synth';
export type { SynthShape } from './gguf/model.synth';
