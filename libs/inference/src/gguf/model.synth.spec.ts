import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '@app/common';
import { GgmlType, GgufArray, Q8_0_BLOCK, Q8_0_BLOCK_BYTES } from './gguf.format';
import { readGgufTensors } from './gguf.reader';
import { SynthShape, synthesizeModel } from './model.synth';

const BUNDLED = join(projectRoot(), 'models', 'stories260K.gguf');
const SMALL: Omit<SynthShape, 'type'> = { dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocab: 600, context: 128 };

/** The rows of a 2-D tensor of the file, as raw bytes each. */
function rows(path: string, name: string): Buffer[] {
  const { tensors } = readGgufTensors(path);
  const t = tensors.find((x) => x.name === name);
  if (!t) throw new Error(`no ${name}`);
  const [rowLength, count] = t.dims;
  const rowBytes = t.type === GgmlType.Q8_0 ? (rowLength / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES : rowLength * (t.type === GgmlType.F16 ? 2 : 4);
  const file = readFileSync(path);
  return Array.from({ length: count }, (_, r) => file.subarray(t.fileOffset + r * rowBytes, t.fileOffset + (r + 1) * rowBytes));
}

describe('model synth', () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'synth-spec-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([
    ['Q8_0', GgmlType.Q8_0],
    ['F16', GgmlType.F16],
    ['F32', GgmlType.F32],
  ])('gives the byte-fallback tokens zero output rows and leaves every other row random (%s)', (_, type) => {
    const path = join(dir, `m-${type}.gguf`);
    synthesizeModel(path, { ...SMALL, type }, BUNDLED, 7);
    const { metadata } = readGgufTensors(path);
    const tokens = (metadata.get('tokenizer.ggml.tokens') as GgufArray).items as string[];
    const bytes = new Set(tokens.flatMap((t, i) => (/^<0x[0-9A-F]{2}>$/.test(t) ? [i] : [])));
    expect(bytes.size).toBe(256);
    const output = rows(path, 'output.weight');
    expect(output).toHaveLength(SMALL.vocab);
    for (const [i, row] of output.entries()) {
      const zero = row.every((b) => b === 0);
      expect([i, zero]).toEqual([i, bytes.has(i)]);
    }
    // The input side keeps them: a prompt may still hold any byte.
    expect(rows(path, 'token_embd.weight').some((row, i) => bytes.has(i) && row.every((b) => b === 0))).toBe(false);
  });

  it('is the same file for the same seed; another seed changes every row but the zero ones', () => {
    const a = join(dir, 'a.gguf');
    const b = join(dir, 'b.gguf');
    synthesizeModel(a, { ...SMALL, type: GgmlType.Q8_0 }, BUNDLED, 3);
    synthesizeModel(b, { ...SMALL, type: GgmlType.Q8_0 }, BUNDLED, 3);
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
    // Another seed: every row differs, the zero rows excepted.
    const c = join(dir, 'c.gguf');
    synthesizeModel(c, { ...SMALL, type: GgmlType.Q8_0 }, BUNDLED, 4);
    const ra = rows(a, 'output.weight');
    const rc = rows(c, 'output.weight');
    const same = ra.filter((row, i) => row.equals(rc[i])).length;
    expect(same).toBe(256);
  });
});
