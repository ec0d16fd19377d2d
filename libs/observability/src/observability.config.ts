import type { AppConfig } from '@app/common';

/**
 * The settings this library reads: its slice of the configuration table. Its providers are
 * handed the validated AppConfig but see it through this type, so what the library depends on is
 * written here, and a setting it starts to read is added here on purpose.
 */
export type ObservabilityConfig = Pick<
  AppConfig,
  | 'apiKeys'
  | 'databaseUrl'
  | 'gpuMetricsIntervalMs'
  | 'healthCheckTimeoutMs'
  | 'logFormat'
  | 'logLevel'
  | 'logPrompts'
  | 'modelName'
  | 'redisUrl'
  | 'stepTraceFile'
>;
