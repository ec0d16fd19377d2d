/**
 * A one-line progress bar on stderr, drawn only on a terminal (scripts and `--json` get clean
 * output) and at most every 100 ms.
 */
export class ProgressBar {
  readonly #enabled: boolean;
  #lastDraw = 0;
  #drawn = false;

  constructor(
    private readonly label: string,
    enabled = true,
    private readonly width = 30,
  ) {
    this.#enabled = enabled && process.stderr.isTTY === true;
  }

  /** `fraction` in [0, 1]; `detail` is shown after the bar. */
  update(fraction: number, detail = ''): void {
    if (!this.#enabled) return;
    const now = Date.now();
    if (now - this.#lastDraw < 100 && fraction < 1) return;
    this.#lastDraw = now;
    const f = Math.max(0, Math.min(1, fraction));
    const filled = Math.round(f * this.width);
    process.stderr.write(`\r${this.label} [${'#'.repeat(filled)}${'.'.repeat(this.width - filled)}] ${Math.round(f * 100)}% ${detail}\x1b[K`);
    this.#drawn = true;
  }

  done(): void {
    if (this.#enabled && this.#drawn) process.stderr.write('\n');
    this.#drawn = false;
  }
}
