// Imported first by main.ts, before any module reads the environment (tracing does when it
// loads): the env file's variables must be in process.env before the configuration is parsed.
import { applyEnvFileOrExit } from '@app/common';

applyEnvFileOrExit();

// Each chat model's native step loop (the engine addon's run()) holds a libuv worker thread for as
// long as it steps, and node-llama-cpp's own jobs (prefix copies, tokenizing long inputs), file
// and crypto work share that pool: Node's default of 4 threads would queue them behind a few busy
// models. Set before the pool starts (libuv reads it once, at first use); an explicit value wins.
process.env.UV_THREADPOOL_SIZE ??= '16';
