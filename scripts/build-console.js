#!/usr/bin/env node
// Bundles the web console (apps/console: Preact + TypeScript) with esbuild into dist/console:
// index.html, app.js, app.css. Everything the page needs is in those files: no CDN, works offline.
const { build } = require('esbuild');
const { copyFileSync, mkdirSync, rmSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const out = join(root, 'dist', 'console');

async function main() {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  await build({
    entryPoints: { app: join(root, 'apps', 'console', 'src', 'main.tsx') },
    outdir: out,
    bundle: true,
    minify: true,
    sourcemap: true,
    format: 'iife',
    target: ['es2022'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    legalComments: 'linked',
    logLevel: 'warning',
  });
  copyFileSync(join(root, 'apps', 'console', 'index.html'), join(out, 'index.html'));
}

main().catch((err) => {
  process.stderr.write(`console build failed: ${err.message}\n`);
  process.exit(1);
});
