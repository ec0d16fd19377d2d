import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { KeysAdminController } from './keys-admin.controller';
import { StatusController } from './status.controller';
import { UsageController } from './usage.controller';

/** Operator routes (keys, usage, live status) used by the web console; usage of one's own key at /v1/usage. */
@Module({ imports: [InferenceModule], controllers: [KeysAdminController, UsageController, StatusController] })
export class AdminModule {}
