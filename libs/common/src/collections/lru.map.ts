/**
 * A Map bounded to `capacity` entries that forgets the least recently used one (the in-memory
 * store under cache-manager: Keyv accepts any Map-like store; the tokenizer's memo). Relies on Map keeping insertion
 * order: a read re-inserts the key at the end, so the first key is always the coldest.
 */
export class LruMap<V = unknown> {
  readonly #map = new Map<string, V>();
  #evictions = 0;

  /** @param capacity most entries held (default 10,000) */
  constructor(readonly capacity = 10_000) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer (got ${capacity})`);
  }

  get size(): number {
    return this.#map.size;
  }

  get evictions(): number {
    return this.#evictions;
  }

  get(key: string): V | undefined {
    const value = this.#map.get(key);
    if (value !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, value);
    }
    return value;
  }

  set(key: string, value: V): boolean {
    this.#map.delete(key);
    this.#map.set(key, value);
    while (this.#map.size > this.capacity) {
      this.#map.delete(this.#map.keys().next().value as string);
      this.#evictions++;
    }
    return true;
  }

  has(key: string): boolean {
    return this.#map.has(key);
  }

  delete(key: string): boolean {
    return this.#map.delete(key);
  }

  clear(): void {
    this.#map.clear();
  }

  keys(): IterableIterator<string> {
    return this.#map.keys();
  }
}
