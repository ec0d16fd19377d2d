import { Module } from '@nestjs/common';
import { CommonModule } from '@app/common';
import { InferenceModule } from '@app/inference';
import { BenchCommand } from './bench/bench.command';
import { ModelSynthCommand } from './bench/model-synth.command';
import { InterferenceBenchCommand } from './bench/interference-bench.command';
import { ServingBenchCommand } from './bench/serving-bench.command';
import { ModelCommand, ModelInfoCommand } from './model-info.command';

@Module({
  imports: [CommonModule, InferenceModule],
  providers: [ModelCommand, ModelInfoCommand, ModelSynthCommand, BenchCommand, ServingBenchCommand, InterferenceBenchCommand],
})
export class CliModule {}
