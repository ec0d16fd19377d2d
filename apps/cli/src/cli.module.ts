import { Module } from '@nestjs/common';
import { CommonModule } from '@app/common';
import { InferenceModule } from '@app/inference';
import { ModelCommand, ModelInfoCommand } from './model-info.command';

@Module({
  imports: [CommonModule, InferenceModule],
  providers: [ModelCommand, ModelInfoCommand],
})
export class CliModule {}
