import type { AppConfig } from '@app/common';
import type { ModelDescriptor } from '@app/inference';

/** What the one start-up line says, as fields (JSON logs) and as a sentence (both formats' `msg`). */
export interface StartupSummary {
  readonly msg: string;
  readonly startup: {
    readonly model: string;
    readonly backend: string;
    readonly engine_addon: boolean;
    readonly slots: number;
    readonly threads: number;
    readonly url: string;
    readonly cache: 'memory' | 'redis' | 'off';
    readonly semantic_cache: boolean;
    readonly key_store: 'sqlite' | 'postgres';
    readonly vectors: string;
    readonly tracing: boolean;
    readonly docs: boolean;
  };
}

/**
 * The line that says the server is up: which model on which backend, how many slots and threads,
 * where it listens and which stores are on (a newcomer sees at a glance what they started).
 */
export function startupSummary(config: AppConfig, model: ModelDescriptor, url: string): StartupSummary {
  const startup = {
    model: model.id,
    backend: model.gpu === false ? 'cpu' : model.gpu,
    engine_addon: model.engine === 'addon',
    slots: model.slots,
    threads: model.threads,
    url,
    cache: !config.cacheEnabled ? ('off' as const) : config.redisUrl ? ('redis' as const) : ('memory' as const),
    semantic_cache: config.semanticCacheEnabled,
    key_store: config.databaseUrl ? ('postgres' as const) : ('sqlite' as const),
    vectors: /^[a-z][a-z0-9+.-]*:\/\//i.test(config.vectorStoreUri) ? config.vectorStoreUri.replace(/\/\/[^@/]*@/, '//***@') : 'local',
    tracing: config.otelExporterOtlpEndpoint !== undefined,
    docs: config.docsEnabled,
  };
  const msg =
    `Ready on ${url}: model ${startup.model} (${startup.backend}, engine addon ${startup.engine_addon ? 'on' : 'off'}, ` +
    `${startup.slots} slots, ${startup.threads} threads); cache ${startup.cache}${startup.semantic_cache ? ' + semantic' : ''}, ` +
    `keys ${startup.key_store}, vectors ${startup.vectors}, tracing ${startup.tracing ? 'on' : 'off'}` +
    (startup.docs ? `; API docs ${url}/docs` : '');
  return { msg, startup };
}
