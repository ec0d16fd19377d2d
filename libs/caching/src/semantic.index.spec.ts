import fc from 'fast-check';
import { SemanticIndex } from './semantic.index';

/** A unit vector at `degrees` from the x axis in the x/y plane (cosine with e1 = cos(degrees)). */
function at(degrees: number, dim = 4): Float32Array {
  const v = new Float32Array(dim);
  v[0] = Math.cos((degrees * Math.PI) / 180);
  v[1] = Math.sin((degrees * Math.PI) / 180);
  return v;
}

describe('SemanticIndex', () => {
  it('finds the most similar row of the scope and reports its cosine exactly', () => {
    const index = new SemanticIndex<string>(4, 10);
    index.insert('a', 's', at(0), 'A');
    index.insert('b', 's', at(30), 'B');
    index.insert('c', 's', at(90), 'C');
    const match = index.search('s', at(25));
    expect(match).toMatchObject({ id: 'b', value: 'B' });
    expect(match?.similarity).toBeCloseTo(Math.cos((5 * Math.PI) / 180), 6);
  });

  it('normalises vectors: scale does not change the similarity', () => {
    const index = new SemanticIndex<string>(4, 10);
    index.insert('a', 's', Float32Array.from([10, 0, 0, 0]), 'A');
    expect(index.search('s', Float32Array.from([0.001, 0.001, 0, 0]))?.similarity).toBeCloseTo(Math.SQRT1_2, 6);
  });

  it('never matches across scopes', () => {
    const index = new SemanticIndex<string>(4, 10);
    index.insert('a', 'model-1/max16', at(0), 'A');
    expect(index.search('model-1/max32', at(0))).toBeNull();
    expect(index.search('model-1/max16', at(0))?.id).toBe('a');
  });

  it('refuses zero and non-finite vectors and checks dimensions', () => {
    const index = new SemanticIndex<string>(4, 10);
    expect(index.insert('z', 's', new Float32Array(4), 'Z')).toBe(false);
    expect(index.insert('n', 's', Float32Array.from([NaN, 0, 0, 0]), 'N')).toBe(false);
    expect(index.size).toBe(0);
    expect(() => index.insert('d', 's', new Float32Array(3), 'D')).toThrow(RangeError);
  });

  it('keeps the bound: inserting into a full index evicts the least recently used row', () => {
    const index = new SemanticIndex<string>(4, 3);
    index.insert('a', 's', at(0), 'A');
    index.insert('b', 's', at(10), 'B');
    index.insert('c', 's', at(20), 'C');
    index.touch('a'); // a is now the most recently used; b the least
    index.insert('d', 's', at(30), 'D');
    expect(index.size).toBe(3);
    expect(index.has('b')).toBe(false);
    expect(index.idsByRecency()).toEqual(['d', 'a', 'c']);
    expect(index.evictions).toBe(1);
    expect(index.search('s', at(10))?.id).not.toBe('b');
  });

  it('replaces an entry with a known id in place', () => {
    const index = new SemanticIndex<string>(4, 3);
    index.insert('a', 's', at(0), 'old');
    index.insert('a', 't', at(90), 'new');
    expect(index.size).toBe(1);
    expect(index.search('s', at(0))).toBeNull();
    expect(index.search('t', at(90))).toMatchObject({ id: 'a', value: 'new' });
  });

  it('drops expired rows when a search meets them', () => {
    const index = new SemanticIndex<string>(4, 5);
    index.insert('old', 's', at(0), 'O', 1_000);
    index.insert('new', 's', at(40), 'N', 5_000);
    expect(index.search('s', at(0), 2_000)?.id).toBe('new');
    expect(index.has('old')).toBe(false);
    expect(index.size).toBe(1);
  });

  it('matches a brute-force reference under any sequence of inserts, touches and deletes', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('insert' as const), id: fc.integer({ min: 0, max: 9 }), scope: fc.integer({ min: 0, max: 2 }), angle: fc.integer({ min: 0, max: 359 }) }),
      fc.record({ kind: fc.constant('touch' as const), id: fc.integer({ min: 0, max: 9 }) }),
      fc.record({ kind: fc.constant('delete' as const), id: fc.integer({ min: 0, max: 9 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), fc.integer({ min: 0, max: 359 }), (ops, query) => {
        const capacity = 4;
        const index = new SemanticIndex<number>(4, capacity);
        // Reference: recency list (front = most recent) of {id, scope, angle}.
        let ref: { id: string; scope: string; angle: number }[] = [];
        for (const o of ops) {
          const id = `e${o.id}`;
          if (o.kind === 'insert') {
            index.insert(id, `s${o.scope}`, at(o.angle), o.angle);
            ref = [{ id, scope: `s${o.scope}`, angle: o.angle }, ...ref.filter((r) => r.id !== id)].slice(0, capacity);
          } else if (o.kind === 'touch') {
            index.touch(id);
            const hit = ref.find((r) => r.id === id);
            if (hit) ref = [hit, ...ref.filter((r) => r.id !== id)];
          } else {
            index.delete(id);
            ref = ref.filter((r) => r.id !== id);
          }
          expect(index.idsByRecency()).toEqual(ref.map((r) => r.id));
          expect(index.size).toBeLessThanOrEqual(capacity);
        }
        for (const scope of ['s0', 's1', 's2']) {
          const q = at(query);
          const candidates = ref.filter((r) => r.scope === scope);
          const got = index.search(scope, q);
          if (!candidates.length) {
            expect(got).toBeNull();
            continue;
          }
          const best = Math.max(...candidates.map((r) => Math.cos(((r.angle - query) * Math.PI) / 180)));
          expect(got?.similarity).toBeCloseTo(best, 5);
        }
      }),
      { numRuns: 300 },
    );
  });
});
