/**
 * A single-consumer push channel: callbacks push, one `for await` pulls. Bridges
 * node-llama-cpp's callback API (onTextChunk) to the AsyncIterable the scheduler streams.
 */
export class AsyncChannel<T> implements AsyncIterable<T> {
  readonly #buffer: T[] = [];
  #waiting: ((r: IteratorResult<T>) => void) | null = null;
  #failWaiting: ((e: unknown) => void) | null = null;
  #closed = false;
  #error: unknown = undefined;

  push(value: T): void {
    if (this.#closed) return;
    if (this.#waiting) {
      const resolve = this.#waiting;
      this.#waiting = this.#failWaiting = null;
      resolve({ value, done: false });
    } else {
      this.#buffer.push(value);
    }
  }

  close(error?: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#error = error;
    if (this.#waiting) {
      const [resolve, reject] = [this.#waiting, this.#failWaiting];
      this.#waiting = this.#failWaiting = null;
      if (error !== undefined) reject?.(error);
      else resolve({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.#buffer.length) return Promise.resolve({ value: this.#buffer.shift() as T, done: false });
        if (this.#closed) {
          return this.#error !== undefined ? Promise.reject(this.#error) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          this.#waiting = resolve;
          this.#failWaiting = reject;
        });
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
