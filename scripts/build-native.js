#!/usr/bin/env node
// Builds the engine addon (libs/inference/native) with node-gyp. Runs as npm's install step, so a
// fresh `npm ci` builds it; it never fails the install: without the addon the server runs on
// node-llama-cpp's own binding (slower with more than one thread) and says so at startup.
//
// The addon needs llama.cpp's headers of the exact release node-llama-cpp ships. They are not in
// the npm package as files, only inside its git bundle: they are extracted from it into
// libs/inference/native/vendor (git-ignored) once.
//
//   node scripts/build-native.js           build if missing or older than its sources
//   node scripts/build-native.js --force   rebuild
//   node scripts/build-native.js --strict  exit 1 when it cannot be built (Dockerfile)
//   LLM_NATIVE_BUILD=0 npm ci               skip (e.g. a platform without a compiler)
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, readdirSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { dirname, join } = require('node:path');

const root = join(__dirname, '..');
const addonDir = join(root, 'libs', 'inference', 'native');
const vendor = join(addonDir, 'vendor');
const output = join(addonDir, 'build', 'Release', 'llm_engine.node');
const bundle = join(root, 'node_modules', 'node-llama-cpp', 'llama', 'gitRelease.bundle');
const force = process.argv.includes('--force');
// --strict: a failure fails the command (the Dockerfile wants the addon in the image).
const strict = process.argv.includes('--strict');

function say(message) {
  process.stderr.write(`[native addon] ${message}\n`);
}

function skip(reason) {
  say(`not built: ${reason}. The server will use node-llama-cpp's own decode path (see README, "Engine").`);
  process.exit(strict ? 1 : 0);
}

if (process.env.LLM_NATIVE_BUILD === '0') skip('LLM_NATIVE_BUILD=0');
// Docker's first `npm ci` runs before the sources are copied in: the Dockerfile builds it later.
if (!existsSync(join(addonDir, 'binding.gyp'))) process.exit(0);
if (process.platform === 'win32') skip('Windows is not supported by this addon yet');
if (!existsSync(bundle)) skip('node-llama-cpp is not installed');

function newest(dir) {
  let latest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) latest = Math.max(latest, newest(p));
    else latest = Math.max(latest, statSync(p).mtimeMs);
  }
  return latest;
}
if (!force && existsSync(output)) {
  const sources = Math.max(newest(join(addonDir, 'src')), statSync(join(addonDir, 'binding.gyp')).mtimeMs);
  if (statSync(output).mtimeMs >= sources) process.exit(0);
}

function extractHeaders() {
  if (existsSync(join(vendor, 'include', 'llama.h')) && existsSync(join(vendor, 'ggml', 'include', 'ggml-cpu.h'))) return;
  const git = spawnSync('git', ['--version'], { encoding: 'utf8' });
  if (git.status !== 0) skip('git is needed once to extract llama.cpp headers from node-llama-cpp\'s bundle');
  const repo = mkdtempSync(join(tmpdir(), 'llm-native-'));
  try {
    const run = (args, opts = {}) => execFileSync('git', ['-C', repo, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    run(['init', '-q']);
    const head = execFileSync('git', ['bundle', 'list-heads', bundle], { encoding: 'utf8' }).trim().split('\n')[0].split(' ')[0];
    run(['fetch', '-q', bundle, head]);
    mkdirSync(vendor, { recursive: true });
    const tar = run(['archive', '--format=tar', head, 'include', 'ggml/include'], { maxBuffer: 64 * 1024 * 1024 });
    execFileSync('tar', ['-x', '-C', vendor], { input: tar });
  } finally {
    rmSync(repo, { recursive: true, force: true });
  }
}

function nodeGyp() {
  // npm sets this for lifecycle scripts; otherwise use the node-gyp that ships with npm.
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] }));
  } catch {
    /* not installed locally */
  }
  return candidates.find((c) => c && existsSync(c));
}

try {
  extractHeaders();
} catch (err) {
  skip(`could not extract llama.cpp headers (${String(err.message).split('\n')[0]})`);
}
const gyp = nodeGyp();
if (!gyp) skip('node-gyp not found');
say('building the engine addon (node-gyp, ~20 s)...');
const started = Date.now();
// The running Node's own headers when they are installed beside it (no download needed);
// inside npm's lifecycle, npm passes its nodedir setting itself.
const args = [gyp, 'rebuild', '--directory', addonDir];
const localHeaders = join(dirname(process.execPath), '..', 'include', 'node', 'node_api.h');
if (!process.env.npm_config_nodedir && existsSync(localHeaders)) args.push(`--nodedir=${join(dirname(process.execPath), '..')}`);
const result = spawnSync(process.execPath, args, {
  cwd: addonDir,
  encoding: 'utf8',
  stdio: ['ignore', 'pipe', 'pipe'],
});
if (result.status !== 0 || !existsSync(output)) {
  process.stderr.write(`${result.stdout ?? ''}${result.stderr ?? ''}`.slice(-4000));
  skip(`node-gyp failed (exit ${result.status})`);
}
say(`built ${output} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
