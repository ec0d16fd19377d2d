import { execSync } from 'node:child_process';
import { join } from 'node:path';

/** Process-level tests start the compiled server, as `npm start` does: build it if stale. */
export default function globalSetup(): void {
  execSync(`node ${join(__dirname, '..', '..', 'scripts', 'ensure-build.js')}`, { stdio: 'inherit' });
}
