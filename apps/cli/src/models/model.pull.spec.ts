import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { settleSize } from './model.pull';

describe('settleSize (the end of a pull, before the checksum)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'settle-'));
  const data = Buffer.from('GGUF' + 'x'.repeat(1000));

  it("cuts ipull's progress JSON that landed after the data once the download ended", () => {
    const path = join(dir, 'tail.gguf');
    writeFileSync(path, Buffer.concat([data, Buffer.from('{"part":0,"chunks":[2,2,2],"chunkSize":5242880,"parallelStreams":3}')]));
    settleSize(path, data.length);
    expect(readFileSync(path).equals(data)).toBe(true);
  });

  it('leaves a file of the announced size as it is', () => {
    const path = join(dir, 'exact.gguf');
    writeFileSync(path, data);
    settleSize(path, data.length);
    expect(readFileSync(path).equals(data)).toBe(true);
  });

  it('deletes a file shorter than announced and says so (not a checksum error)', () => {
    const path = join(dir, 'short.gguf');
    writeFileSync(path, data.subarray(0, 600));
    expect(() => settleSize(path, data.length)).toThrow(`the download of short.gguf ended at 600 of ${data.length} bytes; the file was deleted, pull it again`);
    expect(existsSync(path)).toBe(false);
  });

  it('holds nothing to a size the server did not announce', () => {
    const path = join(dir, 'unknown.gguf');
    writeFileSync(path, data);
    settleSize(path, 0);
    expect(readFileSync(path).equals(data)).toBe(true);
  });
});
