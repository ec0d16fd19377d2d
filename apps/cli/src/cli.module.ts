import { Module } from '@nestjs/common';
import { AuthModule } from '@app/auth';
import { CommonModule } from '@app/common';
import { UsageLedgerModule } from '@app/usage';
import { BenchCommand } from './bench/bench.command';
import { CacheBenchCommand } from './bench/cache-bench.command';
import { InterferenceBenchCommand } from './bench/interference-bench.command';
import { KvBenchCommand } from './bench/kv-bench.command';
import { MultiModelBenchCommand } from './bench/multi-model-bench.command';
import { ModelSynthCommand } from './bench/model-synth.command';
import { ServingBenchCommand } from './bench/serving-bench.command';
import { CacheAdminClient } from './cache/cache-admin.client';
import { CacheCommand, CacheFlushCommand, CacheStatsCommand } from './cache/cache.command';
import { GpuBuildCommand, GpuCommand, GpuRestoreCommand, GpuStatusCommand } from './gpu/gpu.command';
import { HealthCommand } from './health.command';
import { KeysCommand, KeysCreateCommand, KeysListCommand, KeysRevokeCommand, KeysRotateCommand, KeysUpdateCommand } from './keys.command';
import { ModelCommand, ModelInfoCommand } from './model-info.command';
import { ModelAdminClient } from './models/model-admin.client';
import { ModelListCommand, ModelLoadCommand, ModelPullCommand, ModelRmCommand, ModelUnloadCommand } from './models/model.command';
import { UsageCommand } from './usage.command';
import { RetrievalClient } from './retrieval/retrieval.client';
import {
  CollectionsCommand,
  CollectionsCreateCommand,
  CollectionsDeleteCommand,
  CollectionsListCommand,
  DocsAddCommand,
  DocsCommand,
} from './retrieval/retrieval.command';

/** The model is not imported here: `model info` loads it lazily, so other commands start fast. */
@Module({
  imports: [CommonModule, AuthModule.forKeyManagement(), UsageLedgerModule.forReporting()],
  providers: [
    HealthCommand,
    ModelCommand,
    ModelInfoCommand,
    ModelSynthCommand,
    ModelAdminClient,
    ModelListCommand,
    ModelLoadCommand,
    ModelUnloadCommand,
    ModelPullCommand,
    ModelRmCommand,
    KeysCommand,
    KeysCreateCommand,
    KeysUpdateCommand,
    KeysListCommand,
    KeysRevokeCommand,
    KeysRotateCommand,
    UsageCommand,
    CacheAdminClient,
    CacheCommand,
    CacheStatsCommand,
    CacheFlushCommand,
    RetrievalClient,
    CollectionsCommand,
    CollectionsListCommand,
    CollectionsCreateCommand,
    CollectionsDeleteCommand,
    DocsCommand,
    DocsAddCommand,
    GpuCommand,
    GpuBuildCommand,
    GpuStatusCommand,
    GpuRestoreCommand,
    BenchCommand,
    ServingBenchCommand,
    InterferenceBenchCommand,
    CacheBenchCommand,
    KvBenchCommand,
    MultiModelBenchCommand,
  ],
})
export class CliModule {}
