/**
 * A few large buffers a job (a PUT, a bulk answer, a download) fills one after another, each taken
 * again once what was put in it is done with (written to disk, written to a socket). A new
 * multi-megabyte buffer per chunk faults its pages in as it is filled and counts as new external
 * memory for V8, which sets off full collections; a reused one has neither cost.
 *
 * A buffer's bytes may have several holders at once (a download's chunk: its disk write, each local
 * reader sending it): it is free again once the last has let go. A holder that cannot say when it
 * is done (a peer sent the chunk from memory) `keep`s it: it is never reused, and left to the
 * garbage collector. The rule: a holder keeps no view of the bytes once it has let go, and lets go
 * once for each take or hold: a second letGo of bytes whose buffer has been taken again frees it
 * under its new holder. Anything that gets the bytes without `hold` or `keep` breaks it.
 */
export class ReusedBuffers {
  readonly #most: number;
  readonly #free: Buffer[] = [];
  /** Buffers taken and not free yet, by their memory, with how many hold each. */
  readonly #lent = new Map<ArrayBufferLike, { buffer: Buffer; holders: number }>();
  #made = 0;
  #closed = false;

  /** At most `most` buffers are made (kept ones not counted). */
  constructor(most: number) {
    this.#most = most;
  }

  /**
   * A buffer of `size` bytes exactly (a view of one at least that large), held once by the caller;
   * undefined when `most` are lent (make one of your own).
   */
  take(size: number): Buffer | undefined {
    if (this.#closed) return undefined;
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
    this.#lent.set(buffer.buffer, { buffer, holders: 1 });
    return buffer.length === size ? buffer : buffer.subarray(0, size);
  }

  /** Whether `bytes` are a view into one of its buffers that is taken (not kept, not free). */
  lends(bytes: Uint8Array): boolean {
    return this.#lent.has(bytes.buffer);
  }

  /** One more holder of `bytes` (a view into a taken buffer; anything else is not counted). */
  hold(bytes: Uint8Array): void {
    const lent = this.#lent.get(bytes.buffer);
    if (lent) lent.holders++;
  }

  /** A holder of `bytes` is done with them: with the last, their buffer is free. */
  letGo(bytes: Uint8Array): void {
    const lent = this.#lent.get(bytes.buffer);
    if (!lent || --lent.holders > 0) return;
    this.#lent.delete(bytes.buffer);
    if (this.#closed) this.#made--;
    else this.#free.push(lent.buffer);
  }

  /**
   * The job is over: the free buffers go now, and each let go later goes too (whoever still holds
   * the object this belongs to, a reader of a finished download, holds no pool of free buffers).
   */
  close(): void {
    this.#closed = true;
    this.#made -= this.#free.length;
    this.#free.length = 0;
  }

  /** `bytes`' buffer is never reused (someone holds them with no way to say when it is done). */
  keep(bytes: Uint8Array): void {
    if (this.#lent.delete(bytes.buffer)) this.#made--;
  }
}
