#!/usr/bin/env node
// Regenerates the variable tables of docs/CONFIGURATION.md from the configuration table
// (CONFIG_SPEC in libs/common/src/config/app.config.ts, built into dist/). `--check` exits 1
// instead of writing when the file is out of date.
const { readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const { updateConfigDoc } = require(join(root, 'dist', 'libs', 'common', 'src', 'config', 'config.docs.js'));
const file = join(root, 'docs', 'CONFIGURATION.md');
const current = readFileSync(file, 'utf8');
const next = updateConfigDoc(current);
if (process.argv.includes('--check')) {
  if (next !== current) {
    process.stderr.write('docs/CONFIGURATION.md is out of date: run npm run docs:config\n');
    process.exit(1);
  }
} else if (next !== current) {
  writeFileSync(file, next);
  process.stdout.write('docs/CONFIGURATION.md updated\n');
} else {
  process.stdout.write('docs/CONFIGURATION.md is up to date\n');
}
