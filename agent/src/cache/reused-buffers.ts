/**
 * A few large buffers one job (a PUT, a bulk answer) fills one after another, each given back once
 * what was put in it is done with (written to disk, written to a socket), and taken again for the
 * next. A new multi-megabyte buffer per chunk faults its pages in as it is filled and counts as new
 * external memory for V8, which sets off full collections; a reused one has neither cost.
 *
 * The one rule: whoever is handed the bytes of a taken buffer must be done with them (and keep no
 * view of them) when `giveBack` is called: the next `take` overwrites them.
 */
export class ReusedBuffers {
  readonly #most: number;
  readonly #free: Buffer[] = [];
  /** Buffers taken and not given back, by their memory (`giveBack` may be given a view into one). */
  readonly #lent = new Map<ArrayBufferLike, Buffer>();
  #made = 0;

  /** At most `most` buffers are made. */
  constructor(most: number) {
    this.#most = most;
  }

  /** A buffer of `size` bytes or more, or undefined when `most` are lent (make one of your own). */
  take(size: number): Buffer | undefined {
    let buffer = this.#free.pop();
    if (buffer && buffer.length < size) {
      buffer = undefined; // made for smaller chunks: let it go, and make one of this size
      this.#made--;
    }
    if (!buffer) {
      if (this.#made >= this.#most) return undefined;
      buffer = Buffer.allocUnsafeSlow(size); // its own memory, never a slice of Node's pool
      this.#made++;
    }
    this.#lent.set(buffer.buffer, buffer);
    return buffer;
  }

  /** `bytes` (anything: only a view into a taken buffer counts) are done with: that buffer is free. */
  giveBack(bytes: Uint8Array): void {
    const buffer = this.#lent.get(bytes.buffer);
    if (!buffer) return;
    this.#lent.delete(bytes.buffer);
    this.#free.push(buffer);
  }
}
