import type { AppConfig } from '@app/common';

/**
 * The settings this library reads: its slice of the configuration table. Its providers are
 * handed the validated AppConfig but see it through this type, so what the library depends on is
 * written here, and a setting it starts to read is added here on purpose.
 */
export type InferenceConfig = Pick<
  AppConfig,
  | 'batchSize'
  | 'contextSize'
  | 'defaultModel'
  | 'embeddingModelPath'
  | 'engineAddon'
  | 'engineAddonPath'
  | 'engineGapFill'
  | 'enginePromptAlone'
  | 'engineDecodeSplit'
  | 'engineDecodePad'
  | 'engineLoop'
  | 'flashAttention'
  | 'gpu'
  | 'gpuLayers'
  | 'kvCacheTypeK'
  | 'kvCacheTypeV'
  | 'modelKeepAlive'
  | 'modelLoadTimeoutMs'
  | 'modelMemoryBudget'
  | 'modelName'
  | 'modelPath'
  | 'modelPathSet'
  | 'modelsDir'
  | 'modelsFile'
  | 'parallelSlots'
  | 'prefillChunk'
  | 'promptDrainPack'
  | 'promptPackTokens'
  | 'queueMax'
  | 'queueTimeoutMs'
  | 'rerankModelPath'
  | 'schemaLimits'
  | 'threadPoll'
  | 'threads'
>;
