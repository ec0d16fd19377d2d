import { runCli } from './support/cli';

/** Every command of the admin CLI, as scripts call it (the compiled CLI in its own process). */
const COMMANDS: { path: string[]; json: boolean; bad?: true }[] = [
  { path: [], json: false, bad: true },
  { path: ['health'], json: true, bad: true },
  { path: ['model'], json: false },
  { path: ['model', 'info'], json: true },
  { path: ['model', 'synth'], json: true, bad: true },
  { path: ['model', 'list'], json: true, bad: true },
  { path: ['model', 'load'], json: true },
  { path: ['model', 'unload'], json: true },
  { path: ['model', 'pull'], json: true, bad: true },
  { path: ['model', 'rm'], json: true },
  { path: ['keys'], json: false },
  { path: ['keys', 'create'], json: true },
  { path: ['keys', 'list'], json: true, bad: true },
  { path: ['keys', 'revoke'], json: true },
  { path: ['keys', 'rotate'], json: true },
  { path: ['cache'], json: false },
  { path: ['cache', 'stats'], json: true, bad: true },
  { path: ['cache', 'flush'], json: true },
  { path: ['gpu'], json: false },
  { path: ['gpu', 'build'], json: false, bad: true },
  { path: ['gpu', 'status'], json: true },
  { path: ['gpu', 'restore'], json: false },
  { path: ['bench'], json: false },
  { path: ['bench', 'serve'], json: true, bad: true },
  { path: ['bench', 'interference'], json: true },
  { path: ['bench', 'cache'], json: true, bad: true },
  { path: ['bench', 'kv'], json: true },
  { path: ['bench', 'multi'], json: true },
];

/** A few at a time: each run boots Nest (about a second of CPU). */
async function mapLimited<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    }),
  );
  return out;
}

describe('admin CLI: help, --json and exit codes of every command', () => {
  it('answers --help with exit 0 (listing --json where it prints data) and an unknown option with exit 2', async () => {
    const env = { DATA_DIR: '/nonexistent-cli-test' }; // no command may need it for --help
    const results = await mapLimited(COMMANDS, 2, async ({ path, json, bad }) => {
      const help = await runCli([...path, '--help'], env);
      // one command of each family (they share their option handling) gets a wrong option
      const wrong = bad ? await runCli([...path, '--no-such-option'], env) : undefined;
      // The usage line names the program as users run it (Commander alone would say `main`).
      const usage = `Usage: npm run cli -- ${path.join(' ')}`.trimEnd();
      return { path: path.join(' ') || '(root)', json, help, wrong, usage };
    });
    for (const { path, json, help, wrong, usage } of results) {
      expect([path, help.code, help.stdout.startsWith(usage)]).toEqual([path, 0, true]);
      if (json) expect([path, help.stdout.includes('--json')]).toEqual([path, true]);
      if (wrong) expect([path, wrong.code, wrong.stderr]).toEqual([path, 2, expect.stringContaining("unknown option '--no-such-option'")]);
    }
  });
});
