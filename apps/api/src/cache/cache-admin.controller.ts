import { Controller, Delete, Get, Query } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import { CacheLayer, CacheStats, ResponseCacheService } from '@app/caching';

/**
 * Cache administration over HTTP, for `npm run cli -- cache stats|flush` (the CLI is another
 * process: it cannot see this process's in-memory caches). Any valid API key may call it.
 */
@ApiTags('admin')
@ApiSecurity('api-key')
@Controller('admin/cache')
export class CacheAdminController {
  constructor(private readonly cache: ResponseCacheService) {}

  @Get()
  stats(): Promise<CacheStats> {
    return this.cache.stats();
  }

  /** `?layer=exact` or `?layer=semantic` empties one layer; without it, both. */
  @Delete()
  async flush(@Query('layer') layer?: string): Promise<{ flushed: { exact: number | null; semantic: number | null } }> {
    return { flushed: await this.cache.flush(layer ? [layer as CacheLayer] : undefined) };
  }
}
