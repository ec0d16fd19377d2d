import { Controller, Delete, Get, Query } from '@nestjs/common';
import { ApiSecurity, ApiTags } from '@nestjs/swagger';
import { RequireScopes } from '@app/auth';
import { CacheLayer, CacheStats, ResponseCacheService } from '@app/caching';
import { CommonErrorCode, CommonException } from '@app/common';

/**
 * Cache administration over HTTP, for `npm run cli -- cache stats|flush` (the CLI is another
 * process: it cannot see this process's in-memory caches). Needs a key with the `admin` scope.
 */
@ApiTags('admin')
@ApiSecurity('api-key')
@RequireScopes('admin')
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
    if (layer !== undefined && layer !== 'exact' && layer !== 'semantic') {
      throw new CommonException(CommonErrorCode.ValidationFailed, 'layer must be exact or semantic', { param: 'layer' });
    }
    return { flushed: await this.cache.flush(layer ? [layer as CacheLayer] : undefined) };
  }
}
