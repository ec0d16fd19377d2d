import { DynamicModule, Injectable, Module, OnApplicationShutdown, Provider } from '@nestjs/common';
import type { UsageConfig } from './usage.config';
import { getToken } from '@willsoto/nestjs-prometheus';
import { join } from 'node:path';
import type { Counter, Gauge, Histogram } from 'prom-client';
import { AuthModule, GATEWAY_ADMISSION } from '@app/auth';
import { AppConfig } from '@app/common';
import { METRIC } from '@app/observability';
import { BUDGET_METRICS, BudgetMetrics, BudgetService } from './budget.service';
import { Clock } from './clock';
import { PostgresUsageRepository } from './postgres-usage.repository';
import { SqliteUsageRepository } from './sqlite-usage.repository';
import { UsageAdmission } from './usage.admission';
import { USAGE_LEDGER_METRICS, UsageLedgerMetrics, UsageLedgerService } from './usage-ledger.service';
import { UsageMetricsCollector } from './usage-metrics.collector';
import { UsageReportService } from './usage-report.service';
import { UsageRepository } from './usage.repository';

/** The key store's database: PostgreSQL with DATABASE_URL (same schema), else DATA_DIR/keys.db. */
export function createUsageRepository(config: UsageConfig): UsageRepository {
  return config.databaseUrl
    ? new PostgresUsageRepository({ connectionString: config.databaseUrl, schema: config.databaseSchema })
    : new SqliteUsageRepository(join(config.dataDir, 'keys.db'));
}

/** In the CLI no ledger owns the repository: this closes it (a PostgreSQL pool would keep the process alive). */
@Injectable()
class ReportingLifecycle implements OnApplicationShutdown {
  constructor(private readonly repo: UsageRepository) {}

  async onApplicationShutdown(): Promise<void> {
    await this.repo.close().catch(() => undefined);
  }
}

const REPOSITORY: Provider = { provide: UsageRepository, useFactory: createUsageRepository, inject: [AppConfig] };

/**
 * Usage accounting and budgets. `forServer()`: the ledger (buffered, flushed in the background
 * and at shutdown), budgets, reports, and the gateway's admission step (budget check, then one
 * ledger record per metered request when its response ends). Global, so the API's modules and
 * the auth library's gateway guard see it. `forReporting()`: reports only, for the CLI.
 */
@Module({})
export class UsageLedgerModule {
  static forServer(): DynamicModule {
    return {
      module: UsageLedgerModule,
      global: true,
      providers: [
        REPOSITORY,
        Clock,
        {
          provide: USAGE_LEDGER_METRICS,
          inject: [getToken(METRIC.usageFlushDuration), getToken(METRIC.usageFlushFailures), getToken(METRIC.usageDropped), getToken(METRIC.usageBuffered)],
          useFactory: (flushDuration: Histogram, flushFailures: Counter, dropped: Counter, buffered: Gauge): UsageLedgerMetrics => {
            // Shown at 0 from the start, so that alerts on them have a series.
            flushFailures.inc(0);
            dropped.inc(0);
            return { flushDuration, flushFailures, dropped, buffered };
          },
        },
        {
          provide: BUDGET_METRICS,
          inject: [getToken(METRIC.budgetExceeded)],
          useFactory: (exceeded: Counter<'period'>): BudgetMetrics => {
            for (const period of ['day', 'month']) exceeded.inc({ period }, 0);
            return { exceeded };
          },
        },
        UsageLedgerService,
        UsageMetricsCollector,
        BudgetService,
        UsageReportService,
        UsageAdmission,
        { provide: GATEWAY_ADMISSION, useExisting: UsageAdmission },
      ],
      exports: [UsageLedgerService, BudgetService, UsageReportService, Clock, GATEWAY_ADMISSION],
    };
  }

  static forReporting(): DynamicModule {
    return {
      module: UsageLedgerModule,
      imports: [AuthModule.forKeyManagement()],
      providers: [REPOSITORY, Clock, UsageReportService, ReportingLifecycle],
      exports: [UsageReportService, UsageRepository],
    };
  }
}
