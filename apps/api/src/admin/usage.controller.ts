import { Controller, Get, Query } from '@nestjs/common';
import { ApiQuery, ApiSecurity, ApiTags } from '@nestjs/swagger';
import { Caller, RequireScopes } from '@app/auth';
import type { Principal } from '@app/auth';
import { CommonErrorCode, CommonException } from '@app/common';
import { BudgetService, UsageLedgerService, UsageReportService } from '@app/usage';
import type { UsageRequest } from '@app/usage';

const FIELDS = ['key', 'model', 'route', 'from', 'to', 'group_by'] as const;

/** Query parameters as strings; a repeated parameter is a 400 rather than a silent pick. */
function request(query: Record<string, unknown>, allowed: readonly string[]): UsageRequest {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(query)) {
    if (!allowed.includes(name)) {
      throw new CommonException(CommonErrorCode.ValidationFailed, `unknown query parameter ${JSON.stringify(name)}; use ${allowed.join(', ')}`, { param: name });
    }
    if (typeof value !== 'string') throw new CommonException(CommonErrorCode.ValidationFailed, `${name} must be given once`, { param: name });
    out[name] = value;
  }
  return { key: out.key, model: out.model, route: out.route, from: out.from, to: out.to, groupBy: out.group_by };
}

/**
 * Usage reports from the ledger: every key's (`admin` scope) or the caller's own. This replica's
 * buffered usage is written first, so a report includes the requests it has just served.
 */
@ApiTags('usage')
@ApiSecurity('api-key')
@Controller()
export class UsageController {
  constructor(
    private readonly reports: UsageReportService,
    private readonly ledger: UsageLedgerService,
    private readonly budgets: BudgetService,
  ) {}

  @Get('admin/usage')
  @RequireScopes('admin')
  @ApiQuery({ name: 'key', required: false, description: 'Key id or name' })
  @ApiQuery({ name: 'model', required: false })
  @ApiQuery({ name: 'route', required: false, description: 'Route template, e.g. /v1/chat/completions' })
  @ApiQuery({ name: 'from', required: false, description: 'ISO date/time or duration back from now (7d); default 30 days ago' })
  @ApiQuery({ name: 'to', required: false, description: 'Same forms, exclusive; default now' })
  @ApiQuery({ name: 'group_by', required: false, description: 'Comma list of key, model, route, day, hour; default key' })
  async all(@Query() query: Record<string, unknown>): Promise<object> {
    const asked = request(query, FIELDS);
    await this.ledger.flush();
    return this.reports.report(asked);
  }

  /** Any valid key: its own usage and budgets. */
  @Get('v1/usage')
  @RequireScopes()
  async own(@Query() query: Record<string, unknown>, @Caller() caller: Principal): Promise<object> {
    const asked = request(query, FIELDS.filter((f) => f !== 'key'));
    await this.ledger.flush();
    const report = await this.reports.report(asked, caller.id);
    const budgets = await this.budgets.status(caller).catch(() => null);
    return {
      ...report,
      key_id: caller.id,
      budgets:
        budgets === null
          ? null
          : budgets.map((b) => ({ period: b.period, limit: b.limit, used: b.used, remaining: b.remaining, resets_at: new Date(b.resetsAt).toISOString() })),
    };
  }
}
