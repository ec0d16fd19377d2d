// Imported first by main.ts, before tracing (which reads the environment when it loads): the env
// file's variables must be in process.env before anything parses the configuration.
import { ConfigError, loadEnvFile } from '@app/common';

try {
  process.argv = loadEnvFile(process.argv).argv;
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exit(2);
}
