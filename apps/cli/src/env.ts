// Imported first by the CLI's main.ts, before any module reads the environment: the env
// file's variables must be in process.env before anything parses the configuration.
import { ConfigError, loadEnvFile } from '@app/common';

try {
  process.argv = loadEnvFile(process.argv).argv;
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exit(2);
}
