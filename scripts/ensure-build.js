#!/usr/bin/env node
// Builds dist/ when it is missing or older than any source file, so that `npm start` and
// `npm run cli` work on a fresh clone without a separate build step and cost nothing after.
const { execSync } = require('node:child_process');
const { existsSync, readdirSync, statSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const marker = join(root, 'dist', '.built');

function newest(dir) {
  let latest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) latest = Math.max(latest, newest(path));
    else if (/\.(ts|tsx|css|html)$/.test(entry.name)) latest = Math.max(latest, statSync(path).mtimeMs);
  }
  return latest;
}

const sources = Math.max(newest(join(root, 'apps')), newest(join(root, 'libs')), statSync(join(root, 'tsconfig.json')).mtimeMs);
if (!existsSync(marker) || statSync(marker).mtimeMs < sources) {
  process.stderr.write('Building (tsc, console)...\n');
  execSync('npm run --silent build', { cwd: root, stdio: 'inherit' });
}
