// Imported first by main.ts, before any module reads the environment (tracing does when it
// loads): the env file's variables must be in process.env before the configuration is parsed.
import { applyEnvFileOrExit } from '@app/common';

applyEnvFileOrExit();
