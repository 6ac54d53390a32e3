/**
 * Who holds each chunk on disk: the store's reference counts, apart from its files. A chunk is
 * referenced once by each live (or still pinned) object whose manifest lists it, however often it
 * appears there, and once by each open lease (a write in progress) that added it. While a write of
 * a chunk is under way, the chunk is not forgotten even with no reference: that writer takes one, or
 * gives it up. A chunk nothing holds and nobody writes is forgotten: its bytes leave the count and
 * the caller removes its file.
 */
export class ChunkLedger {
  readonly #chunks = new Map<string, { size: number; refs: number; verified: boolean }>();
  /** Writes in flight, by digest. */
  readonly #writers = new Map<string, number>();
  #bytes = 0;

  /** Bytes of every chunk known (on disk). */
  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#chunks.size;
  }

  /** Forgets everything (a store that starts over). */
  clear(): void {
    this.#chunks.clear();
    this.#writers.clear();
    this.#bytes = 0;
  }

  has(digest: string): boolean {
    return this.#chunks.has(digest);
  }

  /** A snapshot of the digests known. */
  digests(): string[] {
    return [...this.#chunks.keys()];
  }

  /** A write of `digest` starts; `endWrite` must follow, whatever happens. */
  startWrite(digest: string): void {
    this.#writers.set(digest, (this.#writers.get(digest) ?? 0) + 1);
  }

  endWrite(digest: string): void {
    const left = (this.#writers.get(digest) ?? 1) - 1;
    if (left > 0) this.#writers.set(digest, left);
    else this.#writers.delete(digest);
  }

  /**
   * The chunk is on disk now, `size` bytes (counted once, however many wrote it). `verified`: its
   * bytes were hashed in this process as they were written (false: found on disk at start).
   */
  stored(digest: string, size: number, verified: boolean): void {
    const known = this.#chunks.get(digest);
    if (known) {
      known.verified ||= verified;
      return;
    }
    this.#chunks.set(digest, { size, refs: 0, verified });
    this.#bytes += size;
  }

  /** Whether the chunk's file was hashed in this process (when written, or read back since). */
  verified(digest: string): boolean {
    return this.#chunks.get(digest)?.verified ?? false;
  }

  /** The chunk's file was read back and hashed to its digest. */
  markVerified(digest: string): void {
    const chunk = this.#chunks.get(digest);
    if (chunk) chunk.verified = true;
  }

  /** One more holder (an object, or a lease) of each distinct digest; each must be known. */
  take(digests: readonly string[]): void {
    for (const digest of distinct(digests)) {
      const chunk = this.#chunks.get(digest);
      if (!chunk) throw new Error(`chunk ${digest} is not stored`);
      chunk.refs++;
    }
  }

  /**
   * One holder fewer of each distinct digest. Returns the chunks nobody holds or writes any more,
   * now forgotten (their files are the caller's to remove).
   */
  release(digests: readonly string[]): string[] {
    const gone: string[] = [];
    for (const digest of distinct(digests)) {
      const chunk = this.#chunks.get(digest);
      if (!chunk || --chunk.refs > 0) continue;
      // Another write of the same chunk is under way: its writer takes a reference, or forgets it.
      if (this.#writers.has(digest)) continue;
      this.#forget(digest, chunk);
      gone.push(digest);
    }
    return gone;
  }

  /**
   * A writer gave its chunk up (its lease was released while it wrote): forgotten when nobody holds
   * or writes it. Returns whether it was.
   */
  abandon(digest: string): boolean {
    const chunk = this.#chunks.get(digest);
    if (!chunk || chunk.refs > 0 || this.#writers.has(digest)) return false;
    this.#forget(digest, chunk);
    return true;
  }

  /** Forgets `digest` whoever holds it (its bytes are bad); false when it was not known. */
  drop(digest: string): boolean {
    const chunk = this.#chunks.get(digest);
    if (!chunk) return false;
    this.#forget(digest, chunk);
    return true;
  }

  /** References to `digest` (for tests and checks). */
  refs(digest: string): number {
    return this.#chunks.get(digest)?.refs ?? 0;
  }

  #forget(digest: string, chunk: { size: number }): void {
    this.#chunks.delete(digest);
    this.#bytes -= chunk.size;
  }
}

/** The digests, each once (most objects have one chunk: no Set made for them). */
function distinct(digests: readonly string[]): Iterable<string> {
  return digests.length < 2 ? digests : new Set(digests);
}
