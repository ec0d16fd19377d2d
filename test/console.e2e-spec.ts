import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import type { BrowserContext, Page } from 'playwright-core';
import { ApiKeysService } from '@app/auth';
import { post } from './support/http';
import { ROOT } from './support/server-process';
import { startTestApp, TestApp } from './support/test-app';

/** Debian's package (`apt-get install chromium`; .ci/run installs it). */
const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test-artifacts', 'console');
/** Playwright adds `--headless` itself (headless: true). */
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const suite = existsSync(CHROMIUM) ? describe : describe.skip;
if (!existsSync(CHROMIUM)) process.stderr.write(`console e2e skipped: ${CHROMIUM} is missing (apt-get install chromium)\n`);

suite('web console in a real headless browser (Debian chromium, Playwright)', () => {
  let t: TestApp;
  let context: BrowserContext;
  let page: Page;
  let profile: string;
  const problems: string[] = [];

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    // KEY_CACHE_TTL_MS=0: a revocation takes effect at the next request.
    t = await startTestApp({ CACHE_ENABLED: 'false', KEY_CACHE_TTL_MS: '0' });
    profile = mkdtempSync(join(tmpdir(), 'console-chromium-'));
    // A fresh profile (--user-data-dir) each run.
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: FLAGS,
      viewport: { width: 1360, height: 860 },
      offline: false,
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page: ${e.message}`));
    page.on('dialog', (d) => void d.accept());
    // Anything the page asks of another origin would be a CDN: there must be none.
    page.on('request', (r) => {
      if (!r.url().startsWith(t.url) && !r.url().startsWith('data:')) problems.push(`foreign request: ${r.url()}`);
    });
  }, 120_000);

  afterAll(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    await t?.close();
  });

  it('sign in, create a key and see it, stream a playground completion, revoke the key', async () => {
    await page.goto(`${t.url}/console/`);
    await page.getByLabel('Admin API key').fill(t.key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'API keys' }).waitFor();
    // The key is in this tab's sessionStorage, never in the address.
    expect(page.url()).not.toContain(t.key);
    expect(await page.evaluate('Object.values(sessionStorage)')).toEqual([expect.stringContaining('sk-test-key')]);

    // Create a key with a budget.
    await page.getByRole('button', { name: 'New key' }).click();
    const form = page.getByRole('form', { name: 'Create key' });
    await form.getByLabel('Name').fill('browser-key');
    await form.getByLabel('Budget / day (tokens)').fill('50000');
    await form.getByRole('button', { name: 'Create' }).click();
    const secret = (await page.locator('.secret-value').textContent())?.trim() ?? '';
    expect(secret).toMatch(/^sk-llm-/);
    const row = page.locator('tr[data-key="browser-key"]');
    await row.waitFor();
    expect(await row.textContent()).toContain('active');
    expect(await row.textContent()).toContain('50k');
    const stored = await t.app.get(ApiKeysService).resolve('browser-key');
    expect(stored.budget).toEqual({ day: 50_000, month: 0 });
    expect((await post(t.url, '/v1/generate', secret, { prompt: 'Hi', max_tokens: 2 })).status).toBe(200);
    await page.screenshot({ path: join(ARTIFACTS, '1-keys.png'), fullPage: true });

    // Playground: a streamed chat completion.
    await page.getByRole('link', { name: 'Playground' }).click();
    const pg = page.getByRole('form', { name: 'Playground' });
    await pg.getByLabel('Message').fill('Tell me a story about a cat');
    await pg.getByLabel('Max tokens').fill('200');
    await pg.getByLabel('Temperature').fill('0.8');
    // Count how the output grows: a streamed answer arrives in several pieces.
    // (Browser code as strings: the test's TypeScript has Node's globals, not the DOM's.)
    await page.evaluate(`{
      const out = document.querySelector('pre.output');
      window.lengths = [];
      new MutationObserver(() => window.lengths.push(out.innerText.replace('▍', '').length)).observe(out, { childList: true, subtree: true, characterData: true });
    }`);
    await pg.getByRole('button', { name: 'Run' }).click();
    // (No waitForFunction: it evaluates a string in the page, which the console's CSP forbids.)
    await page.locator('[data-stat="finish"]', { hasText: /^(stop|length)$/ }).waitFor({ timeout: 60_000 });
    await page.locator('pre.output .cursor').waitFor({ state: 'detached' });
    const text = (await page.locator('pre.output').innerText()).trim();
    expect(text.length).toBeGreaterThan(10);
    const lengths = (await page.evaluate('window.lengths')) as number[];
    expect(new Set(lengths.filter((n) => n > 0 && n < text.length)).size).toBeGreaterThan(1);
    expect(Number(await page.locator('[data-stat="completion-tokens"]').textContent())).toBeGreaterThan(1);
    expect(await page.locator('[data-stat="tokens-per-second"]').textContent()).toMatch(/^\d+(\.\d)?$/);
    await page.screenshot({ path: join(ARTIFACTS, '2-playground.png'), fullPage: true });

    // Usage and live pages render the same server's data.
    await page.getByRole('link', { name: 'Usage' }).click();
    await page.getByRole('table', { name: 'Usage totals' }).waitFor();
    await page.locator('svg.chart').waitFor();
    expect(await page.getByRole('table', { name: 'Usage totals' }).textContent()).toContain('browser-key');
    await page.screenshot({ path: join(ARTIFACTS, '3-usage.png'), fullPage: true });
    await page.getByRole('link', { name: 'Models & live' }).click();
    await page.getByRole('heading', { name: /stories260K/ }).waitFor();
    expect(await page.locator('[aria-label="Scheduler"]').textContent()).toContain('Slots busy');
    await page.screenshot({ path: join(ARTIFACTS, '4-live.png'), fullPage: true });

    // Revoke: the row says so and the secret stops working.
    await page.getByRole('link', { name: 'Keys' }).click();
    await row.getByRole('button', { name: 'Revoke' }).click();
    await row.waitFor({ state: 'detached' });
    await page.getByLabel('show revoked').check();
    expect(await page.locator('tr[data-key="browser-key"]').textContent()).toContain('revoked');
    const refused = await post(t.url, '/v1/generate', secret, { prompt: 'Hi', max_tokens: 2 });
    expect(refused.body.error.code).toBe('api_key_revoked');
    await page.screenshot({ path: join(ARTIFACTS, '5-revoked.png'), fullPage: true });

    expect(problems).toEqual([]);
  }, 120_000);

  it('a key without the admin scope cannot sign in; signing out forgets the key', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    expect(await page.evaluate('sessionStorage.length')).toBe(0);
    const { key } = await t.app.get(ApiKeysService).create({ name: 'not-admin' });
    await page.getByLabel('Admin API key').fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('This key lacks the admin scope.').waitFor();
    expect(await page.evaluate('sessionStorage.length')).toBe(0);
    // Failed sign-ins show in the page; nothing else went wrong (a 403 in the console log is the request's).
    expect(problems.filter((p) => !p.includes('403'))).toEqual([]);
  }, 60_000);
});
