import { Module } from '@nestjs/common';
import { CommonModule } from '@app/common';
import { BenchCommand } from './bench/bench.command';
import { CacheBenchCommand } from './bench/cache-bench.command';
import { CacheAdminClient } from './cache/cache-admin.client';
import { CacheCommand, CacheFlushCommand, CacheStatsCommand } from './cache/cache.command';
import { ModelCommand, ModelInfoCommand } from './model-info.command';

/** The model is loaded only by the commands that need it (lazily): see ModelInfoCommand. */
@Module({
  imports: [CommonModule],
  providers: [
    ModelCommand,
    ModelInfoCommand,
    CacheAdminClient,
    CacheCommand,
    CacheStatsCommand,
    CacheFlushCommand,
    BenchCommand,
    CacheBenchCommand,
  ],
})
export class CliModule {}
