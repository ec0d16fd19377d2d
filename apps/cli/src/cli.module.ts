import { Module } from '@nestjs/common';
import { AuthModule } from '@app/auth';
import { CommonModule } from '@app/common';
import { KeysCommand, KeysCreateCommand, KeysListCommand, KeysRevokeCommand, KeysRotateCommand } from './keys.command';
import { ModelCommand, ModelInfoCommand } from './model-info.command';

/** The model is not imported here: `model info` loads it lazily, so `keys` commands start fast. */
@Module({
  imports: [CommonModule, AuthModule.forKeyManagement()],
  providers: [
    ModelCommand,
    ModelInfoCommand,
    KeysCommand,
    KeysCreateCommand,
    KeysListCommand,
    KeysRevokeCommand,
    KeysRotateCommand,
  ],
})
export class CliModule {}
