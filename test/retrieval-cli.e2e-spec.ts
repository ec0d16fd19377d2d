import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './support/cli';
import { ServerProcess, startServer, waitForModel } from './support/server-process';

const KEY = 'sk-cli-retrieval-test-0123456789';

describe('npm run cli -- collections list|create|delete and docs add against a running server', () => {
  let server: ServerProcess;
  let files: string[];
  beforeAll(async () => {
    server = await startServer({ API_KEYS: KEY, RETRIEVAL_CHUNK_TOKENS: '16', RETRIEVAL_CHUNK_OVERLAP: '2' });
    await waitForModel(server);
    const dir = mkdtempSync(join(tmpdir(), 'docs-'));
    files = ['owl.txt', 'boat.txt'].map((name) => join(dir, name));
    writeFileSync(files[0], 'The owl sleeps in the day and hunts mice at night in the quiet woods behind the farm.');
    writeFileSync(files[1], 'The little boat floats on the lake.');
    writeFileSync(join(dir, 'empty.txt'), '  ');
    files.push(join(dir, 'empty.txt'));
  });
  afterAll(() => server?.stop());

  // MODEL_PATH points nowhere: these commands never load a model (the server embeds).
  const cli = (args: string[]) => runCli(args, { MODEL_PATH: '/nonexistent/model.gguf', API_KEY: KEY });

  it('creates a collection, uploads files with a progress bar, lists and deletes it', async () => {
    const created = await cli(['collections', 'create', 'notes', '--url', server.url]);
    expect(created).toMatchObject({ code: 0, stdout: 'Created collection notes\n' });

    const added = await cli(['docs', 'add', '-c', 'notes', files[0], files[1], files[2], '--url', server.url]);
    // The empty file fails (the server's 400), the others are added; the exit code says so.
    expect(added.code).toBe(1);
    expect(added.stdout).toMatch(/added .*owl\.txt as owl\.txt \(\d+ chunks\)/);
    expect(added.stdout).toMatch(/added .*boat\.txt as boat\.txt \(1 chunks\)/);
    expect(added.stdout).toMatch(/FAILED .*empty\.txt: .*400.*no text/);
    expect(added.stderr).toContain('[##############################] 3/3');
    expect(added.stderr).toContain('1 of 3 files failed');

    const listed = await cli(['collections', 'list', '--json', '--url', server.url]);
    expect(listed.code).toBe(0);
    const [notes] = JSON.parse(listed.stdout);
    expect(notes.name).toBe('notes');
    expect(notes.chunks).toBeGreaterThanOrEqual(3);

    const deleted = await cli(['collections', 'delete', 'notes', '--url', server.url]);
    expect(deleted).toMatchObject({ code: 0, stdout: 'Deleted collection notes\n' });
    expect(existsSync(join(server.dataDir, 'vectors', 'notes.lance'))).toBe(false);
    expect((await cli(['collections', 'list', '--url', server.url])).stdout).toBe('No collections.\n');
  });

  it('reports an unknown collection, a missing option and an unreachable server', async () => {
    const unknown = await cli(['collections', 'delete', 'nope', '--url', server.url]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/404.*does not exist/);
    expect((await cli(['docs', 'add', files[1], '--url', server.url])).code).toBe(2);
    const down = await cli(['collections', 'list', '--url', 'http://127.0.0.1:1']);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('server not reachable');
  });
});
