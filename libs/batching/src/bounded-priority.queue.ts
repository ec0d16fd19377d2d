/**
 * A bounded queue ordered by priority (higher first) and, within a priority, by arrival.
 * Sizes are small (hundreds), so a sorted array beats a heap on constant factors and keeps
 * removal of a cancelled entry O(n) without tombstones.
 */
export class BoundedPriorityQueue<T> {
  readonly #items: { value: T; priority: number; order: number }[] = [];
  #order = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) {
      throw new RangeError(`capacity must be a non-negative integer, got ${capacity}`);
    }
  }

  get size(): number {
    return this.#items.length;
  }

  get isFull(): boolean {
    return this.#items.length >= this.capacity;
  }

  /** Adds an item; returns false (and adds nothing) when the queue is full. */
  offer(value: T, priority = 0): boolean {
    if (this.isFull) return false;
    const entry = { value, priority, order: this.#order++ };
    let i = this.#items.length;
    while (i > 0 && this.#items[i - 1].priority < priority) i--;
    this.#items.splice(i, 0, entry);
    return true;
  }

  poll(): T | undefined {
    return this.#items.shift()?.value;
  }

  peek(): T | undefined {
    return this.#items[0]?.value;
  }

  /** Removes a specific item (a cancelled waiter); returns whether it was queued. */
  remove(value: T): boolean {
    const i = this.#items.findIndex((e) => e.value === value);
    if (i < 0) return false;
    this.#items.splice(i, 1);
    return true;
  }

  /** Position (0 = next) of an item, or -1. */
  indexOf(value: T): number {
    return this.#items.findIndex((e) => e.value === value);
  }

  drainAll(): T[] {
    return this.#items.splice(0).map((e) => e.value);
  }
}
