import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './support/server-process';

interface Mismatch {
  readonly tokens: number[];
  readonly ctx: number[];
  readonly special: boolean;
  readonly fast: string;
  readonly expected: string;
}
interface ChildResult {
  readonly vocab: number;
  readonly trials: number;
  readonly answered: number;
  readonly nulls: number;
  readonly mismatches: Mismatch[];
  readonly streamed: { readonly tokens: number; readonly answered: number; readonly same: boolean };
  readonly outOfRange: string | null;
  readonly overrun: string;
}

/**
 * The engine addon's detokenizeAfter() (libs/inference/native), which turns each streamed token
 * into text in one native call: where it answers, the text is node-llama-cpp's
 * LlamaModel.detokenize(tokens, special, context) exactly (that is what the server used before,
 * and what it still asks where the addon answers null). Run on the bundled model in a child
 * process (test/support/detokenize.child.mjs): thousands of random token sequences of the whole
 * vocabulary (control and byte-fallback tokens included), and a text with non-ASCII characters
 * streamed token by token as the server's text decoder does.
 */
describe('engine addon detokenizeAfter', () => {
  let result: ChildResult;
  beforeAll(() => {
    const child = spawnSync(process.execPath, [join(ROOT, 'test', 'support', 'detokenize.child.mjs'), ROOT], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    if (child.error || child.status !== 0) {
      throw new Error(`child failed (${child.error?.message ?? `exit ${child.status}, signal ${child.signal}`}): ${child.stderr.slice(-2000)}`);
    }
    result = JSON.parse(child.stdout.trim().split('\n').pop() as string) as ChildResult;
  });

  it("answers with node-llama-cpp's text, to the character, wherever it answers", () => {
    expect(result.vocab).toBeGreaterThan(256);
    expect(result.mismatches).toEqual([]);
    // Random byte-fallback tokens often leave a context that is not valid UTF-8: those go to
    // node-llama-cpp (null). Most trials are still answered.
    expect(result.answered).toBeGreaterThan(result.trials / 3);
    expect(result.answered + result.nulls).toBe(result.trials);
  });

  it('answers most tokens of a streamed text (those after a split multi-byte character go to node-llama-cpp)', () => {
    expect(result.streamed.same).toBe(true);
    expect(result.streamed.answered).toBeGreaterThan(result.streamed.tokens * 0.6);
  });

  it('refuses what it cannot answer exactly: null for an id out of range, a RangeError for counts beyond the array', () => {
    expect(result.outOfRange).toBeNull();
    expect(result.overrun).toBe('RangeError');
  });
});
