import { Module } from '@nestjs/common';
import { InferenceModule } from '@app/inference';
import { ModelAccessService } from './model-access.service';
import { ModelsAdminController } from './models-admin.controller';

/** Routing requests to models (per-key access, per-model limits) and the model admin routes. */
@Module({ imports: [InferenceModule], controllers: [ModelsAdminController], providers: [ModelAccessService], exports: [ModelAccessService] })
export class ModelsModule {}
