/** One lookup's answer: the closest live row of the scope, whether or not it passed the threshold. */
export interface IndexMatch<T> {
  readonly id: string;
  readonly value: T;
  /** Cosine similarity (vectors are normalised, so a dot product). */
  readonly similarity: number;
}

const NONE = -1;

/**
 * Vectors in one contiguous Float32Array (row-major, one row per entry, normalised at insert),
 * with a bounded LRU over the rows. A lookup is one pass of dot products over the rows of the
 * request's scope; rows of other scopes are skipped by an Int32Array comparison, so a hit is only
 * possible within one scope (model + output-shaping parameters).
 *
 * Every operation but `search` is O(1): the LRU is a doubly linked list threaded through two
 * Int32Arrays, and an evicted row is reused in place.
 */
export class SemanticIndex<T> {
  readonly #matrix: Float32Array;
  readonly #scopeOf: Int32Array;
  readonly #prev: Int32Array;
  readonly #next: Int32Array;
  readonly #expires: Float64Array;
  readonly #ids: (string | undefined)[];
  readonly #values: (T | undefined)[];
  readonly #rowById = new Map<string, number>();
  readonly #scopeIds = new Map<string, { id: number; rows: number }>();
  readonly #scopeNames = new Map<number, string>();
  #nextScopeId = 0;
  #size = 0;
  #head = NONE; // most recently used
  #tail = NONE; // least recently used
  #evictions = 0;

  /**
   * @param dimension length of every vector
   * @param capacity most rows kept; inserting beyond it evicts the least recently used row
   */
  constructor(
    readonly dimension: number,
    readonly capacity: number,
  ) {
    if (!Number.isInteger(dimension) || dimension < 1) throw new RangeError(`dimension must be a positive integer (got ${dimension})`);
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer (got ${capacity})`);
    this.#matrix = new Float32Array(dimension * capacity);
    this.#scopeOf = new Int32Array(capacity).fill(NONE);
    this.#prev = new Int32Array(capacity).fill(NONE);
    this.#next = new Int32Array(capacity).fill(NONE);
    this.#expires = new Float64Array(capacity);
    this.#ids = new Array<string | undefined>(capacity);
    this.#values = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.#size;
  }

  /** Rows dropped to keep the bound since creation. */
  get evictions(): number {
    return this.#evictions;
  }

  has(id: string): boolean {
    return this.#rowById.has(id);
  }

  /** Ids from most to least recently used (tests and diagnostics). */
  idsByRecency(): string[] {
    const out: string[] = [];
    for (let row = this.#head; row !== NONE; row = this.#next[row]) out.push(this.#ids[row] as string);
    return out;
  }

  /**
   * Adds (or replaces, for a known id) one entry. The vector is copied and normalised; a zero or
   * non-finite vector cannot be compared and is refused (returns false).
   */
  insert(id: string, scope: string, vector: Float32Array, value: T, expiresAt = Infinity): boolean {
    if (vector.length !== this.dimension) {
      throw new RangeError(`vector has ${vector.length} dimensions; the index holds ${this.dimension}`);
    }
    const norm = Math.sqrt(dot(vector, 0, vector, 0, vector.length));
    if (!(norm > 0) || !Number.isFinite(norm)) return false;
    let row = this.#rowById.get(id) ?? NONE;
    if (row !== NONE) {
      this.#releaseScope(this.#scopeOf[row]);
      this.#unlink(row);
    } else if (this.#size < this.capacity) {
      row = this.#size++;
    } else {
      row = this.#tail;
      this.#evict(row);
    }
    const base = row * this.dimension;
    for (let i = 0; i < this.dimension; i++) this.#matrix[base + i] = vector[i] / norm;
    this.#scopeOf[row] = this.#acquireScope(scope);
    this.#ids[row] = id;
    this.#values[row] = value;
    this.#expires[row] = expiresAt;
    this.#rowById.set(id, row);
    this.#pushFront(row);
    return true;
  }

  /**
   * The most similar live row of `scope`, or null when the scope holds none. Expired rows met on
   * the way are removed. A hit (similarity >= threshold, decided by the caller) should be followed
   * by `touch` so that the LRU sees the use.
   */
  search(scope: string, vector: Float32Array, now = Date.now()): IndexMatch<T> | null {
    if (vector.length !== this.dimension) {
      throw new RangeError(`vector has ${vector.length} dimensions; the index holds ${this.dimension}`);
    }
    const scopeId = this.#scopeIds.get(scope)?.id;
    if (scopeId === undefined) return null;
    const norm = Math.sqrt(dot(vector, 0, vector, 0, vector.length));
    if (!(norm > 0) || !Number.isFinite(norm)) return null;
    const dim = this.dimension;
    const scopes = this.#scopeOf;
    const matrix = this.#matrix;
    let best = NONE;
    let bestScore = -Infinity;
    const expired: number[] = [];
    for (let row = 0; row < this.#size; row++) {
      if (scopes[row] !== scopeId) continue;
      if (this.#expires[row] <= now) {
        expired.push(row);
        continue;
      }
      const score = dot(matrix, row * dim, vector, 0, dim);
      if (score > bestScore) {
        bestScore = score;
        best = row;
      }
    }
    let match: IndexMatch<T> | null = null;
    if (best !== NONE) {
      match = { id: this.#ids[best] as string, value: this.#values[best] as T, similarity: Math.min(1, bestScore / norm) };
    }
    // Highest rows first: removal moves the last row into the hole, which must not be one we still need.
    for (const row of expired.sort((a, b) => b - a)) this.delete(this.#ids[row] as string);
    return match;
  }

  /** Marks an entry as just used (LRU). */
  touch(id: string): void {
    const row = this.#rowById.get(id);
    if (row === undefined || row === this.#head) return;
    this.#unlink(row);
    this.#pushFront(row);
  }

  delete(id: string): boolean {
    const row = this.#rowById.get(id);
    if (row === undefined) return false;
    this.#unlink(row);
    this.#releaseScope(this.#scopeOf[row]);
    this.#rowById.delete(id);
    // Keep rows dense (the scan stops at #size): move the last row into the hole.
    const last = this.#size - 1;
    if (row !== last) this.#moveRow(last, row);
    this.#clearRow(last);
    this.#size--;
    return true;
  }

  clear(): void {
    for (let row = 0; row < this.#size; row++) this.#clearRow(row);
    this.#rowById.clear();
    this.#scopeIds.clear();
    this.#scopeNames.clear();
    this.#size = 0;
    this.#head = this.#tail = NONE;
  }

  #evict(row: number): void {
    this.#unlink(row);
    this.#releaseScope(this.#scopeOf[row]);
    this.#rowById.delete(this.#ids[row] as string);
    this.#evictions++;
  }

  #moveRow(from: number, to: number): void {
    const dim = this.dimension;
    this.#matrix.copyWithin(to * dim, from * dim, from * dim + dim);
    this.#scopeOf[to] = this.#scopeOf[from];
    this.#expires[to] = this.#expires[from];
    this.#ids[to] = this.#ids[from];
    this.#values[to] = this.#values[from];
    this.#rowById.set(this.#ids[to] as string, to);
    const [p, n] = [this.#prev[from], this.#next[from]];
    this.#prev[to] = p;
    this.#next[to] = n;
    if (p !== NONE) this.#next[p] = to;
    else this.#head = to;
    if (n !== NONE) this.#prev[n] = to;
    else this.#tail = to;
  }

  #clearRow(row: number): void {
    this.#scopeOf[row] = NONE;
    this.#prev[row] = this.#next[row] = NONE;
    this.#ids[row] = undefined;
    this.#values[row] = undefined;
  }

  #pushFront(row: number): void {
    this.#prev[row] = NONE;
    this.#next[row] = this.#head;
    if (this.#head !== NONE) this.#prev[this.#head] = row;
    this.#head = row;
    if (this.#tail === NONE) this.#tail = row;
  }

  #unlink(row: number): void {
    const [p, n] = [this.#prev[row], this.#next[row]];
    if (p !== NONE) this.#next[p] = n;
    else if (this.#head === row) this.#head = n;
    if (n !== NONE) this.#prev[n] = p;
    else if (this.#tail === row) this.#tail = p;
    this.#prev[row] = this.#next[row] = NONE;
  }

  #acquireScope(scope: string): number {
    let entry = this.#scopeIds.get(scope);
    if (!entry) {
      entry = { id: this.#nextScopeId++, rows: 0 };
      this.#scopeIds.set(scope, entry);
      this.#scopeNames.set(entry.id, scope);
    }
    entry.rows++;
    return entry.id;
  }

  #releaseScope(id: number): void {
    const name = this.#scopeNames.get(id);
    const entry = name === undefined ? undefined : this.#scopeIds.get(name);
    if (!entry || --entry.rows > 0) return;
    this.#scopeIds.delete(name as string);
    this.#scopeNames.delete(id);
  }
}

/** Dot product of `n` floats of `a` from `ai` and `b` from `bi`, four lanes at a time. */
function dot(a: Float32Array, ai: number, b: Float32Array, bi: number, n: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    s0 += a[ai + i] * b[bi + i];
    s1 += a[ai + i + 1] * b[bi + i + 1];
    s2 += a[ai + i + 2] * b[bi + i + 2];
    s3 += a[ai + i + 3] * b[bi + i + 3];
  }
  for (; i < n; i++) s0 += a[ai + i] * b[bi + i];
  return s0 + s1 + s2 + s3;
}
