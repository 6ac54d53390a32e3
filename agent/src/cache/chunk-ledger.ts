/**
 * Who holds each chunk on disk: the store's reference counts, apart from its files. A chunk is
 * referenced once by each live (or still pinned) object whose manifest lists it, however often it
 * appears there, and once by each open lease (a write in progress) that added it. While a write of
 * a chunk is under way, the chunk is not forgotten even with no reference: that writer takes one, or
 * gives it up. A chunk nothing holds and nobody writes is forgotten: its bytes leave the count and
 * the caller removes its file.
 *
 * Chunks are named by K: the store names them by ChunkKey (chunk-key.ts), the compact form of a
 * digest; any string does for the ledger.
 */
export class ChunkLedger<K extends string = string> {
  /**
   * Each chunk's size, references and verified bit in one number (pack): a small integer V8 keeps
   * in the map's slot, where an object of three fields cost 48 bytes more per chunk.
   */
  readonly #chunks = new Map<K, number>();
  /** Writes in flight, by digest. */
  readonly #writers = new Map<K, number>();
  /**
   * References taken before their chunk was dropped (its bytes were bad) and not released yet, by
   * digest: their releases end here, never on a copy of the chunk stored since. (References are
   * alike: which holder's release lands here does not matter, only the count.)
   */
  readonly #stale = new Map<K, number>();
  #bytes = 0;
  /** Bytes of the chunks of at most #smallAtMost bytes, those leaving included. */
  #smallBytes = 0;
  readonly #smallAtMost: number;
  /** How a chunk is named in an error (the store's keys are bytes: their hex). */
  readonly #name: (key: K) => string;
  /** Small chunks forgotten whose row's delete has not ended (removed()), with their sizes. */
  readonly #leaving = new Map<K, number>();
  #drops = 0;

  /**
   * `smallAtMost`: chunks of at most this many bytes are also counted apart (smallBytes). `name`:
   * how an error names a chunk.
   */
  constructor(smallAtMost = 0, name: (key: K) => string = String) {
    this.#smallAtMost = smallAtMost;
    this.#name = name;
  }

  /** How many chunks were dropped (found damaged) so far. */
  get drops(): number {
    return this.#drops;
  }

  /** Bytes of every chunk known (on disk). */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Bytes of the chunks known of at most the constructor's `smallAtMost` bytes, and of those
   * forgotten whose row's delete the caller has not said ended (removed()): still in the database,
   * which the store measures (object-store.ts #measured) right after each commit.
   */
  get smallBytes(): number {
    return this.#smallBytes;
  }

  /**
   * The database's delete of a forgotten chunk's row ended (done or failed): its bytes leave
   * smallBytes. Said as the delete commits, not once its file is gone too, or the measure after
   * the commit would count the row as still there.
   */
  removed(digest: K): void {
    const size = this.#leaving.get(digest);
    if (size === undefined) return;
    this.#leaving.delete(digest);
    this.#smallBytes -= size;
  }

  get size(): number {
    return this.#chunks.size;
  }

  /** Forgets everything (a store that starts over). */
  clear(): void {
    this.#chunks.clear();
    this.#writers.clear();
    this.#stale.clear();
    this.#bytes = 0;
    this.#smallBytes = 0;
    this.#leaving.clear();
  }

  has(digest: K): boolean {
    return this.#chunks.has(digest);
  }

  /** Whether a write of `digest` is under way. */
  writing(digest: K): boolean {
    return this.#writers.has(digest);
  }

  /**
   * The digests known, live: a digest added while it is walked is walked too (at the end), one
   * removed before it is reached is not (a Map's iteration); a walker bounds its walk. No copy: a
   * snapshot of a million digests held 8 MB for as long as a scrub took.
   */
  digests(): IterableIterator<K> {
    return this.#chunks.keys();
  }

  /** A write of `digest` starts; `endWrite` must follow, whatever happens. */
  startWrite(digest: K): void {
    this.#writers.set(digest, (this.#writers.get(digest) ?? 0) + 1);
  }

  endWrite(digest: K): void {
    const left = (this.#writers.get(digest) ?? 1) - 1;
    if (left > 0) this.#writers.set(digest, left);
    else this.#writers.delete(digest);
  }

  /**
   * The chunk is on disk now, `size` bytes (counted once, however many wrote it). `verified`: its
   * bytes were hashed in this process as they were written (false: found on disk at start).
   */
  stored(digest: K, size: number, verified: boolean): void {
    const known = this.#chunks.get(digest);
    if (known !== undefined) {
      if (verified && !isVerified(known)) this.#chunks.set(digest, known + 1);
      return;
    }
    this.#chunks.set(digest, pack(size, 0, verified));
    this.removed(digest); // stored again before its removal ended
    this.#count(size);
  }

  /**
   * A one-chunk object found at start holds `digest`, of `size` bytes, found on disk (unverified):
   * stored and take in one look (a start does it a million times).
   */
  storedAndTaken(digest: K, size: number): void {
    const known = this.#chunks.get(digest);
    if (known === undefined) {
      this.removed(digest);
      this.#count(size);
    }
    this.#chunks.set(digest, known === undefined ? pack(size, 1, false) : known + REF);
  }

  /** Whether the chunk's file was hashed in this process (when written, or read back since). */
  verified(digest: K): boolean {
    const chunk = this.#chunks.get(digest);
    return chunk !== undefined && isVerified(chunk);
  }

  /** The chunk's file was read back and hashed to its digest. */
  markVerified(digest: K): void {
    const chunk = this.#chunks.get(digest);
    if (chunk !== undefined && !isVerified(chunk)) this.#chunks.set(digest, chunk + 1);
  }

  /** One more holder (an object, or a lease) of each distinct digest; each must be known. */
  take(digests: readonly K[] | K): void {
    for (const digest of distinct(digests)) {
      const chunk = this.#chunks.get(digest);
      if (chunk === undefined) throw new Error(`chunk ${this.#name(digest)} is not stored`);
      this.#chunks.set(digest, chunk + REF);
    }
  }

  /**
   * One holder fewer of each distinct digest. Returns the chunks nobody holds or writes any more,
   * now forgotten (their files are the caller's to remove).
   */
  release(digests: readonly K[] | K): K[] {
    const gone: K[] = [];
    for (const digest of distinct(digests)) {
      const stale = this.#stale.get(digest);
      if (stale !== undefined) {
        if (stale > 1) this.#stale.set(digest, stale - 1);
        else this.#stale.delete(digest);
        continue;
      }
      let chunk = this.#chunks.get(digest);
      if (chunk === undefined) continue;
      if (refsOf(chunk) > 0) this.#chunks.set(digest, (chunk -= REF));
      if (refsOf(chunk) > 0) continue;
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
  abandon(digest: K): boolean {
    const chunk = this.#chunks.get(digest);
    if (chunk === undefined || refsOf(chunk) > 0 || this.#writers.has(digest)) return false;
    this.#forget(digest, chunk);
    return true;
  }

  /**
   * Forgets `digest` whoever holds it (its bytes are bad); false when it was not known. Its holders'
   * references are kept apart (#stale), so their releases cannot free a copy stored since.
   */
  drop(digest: K): boolean {
    const chunk = this.#chunks.get(digest);
    if (chunk === undefined) return false;
    const refs = refsOf(chunk);
    if (refs > 0) this.#stale.set(digest, (this.#stale.get(digest) ?? 0) + refs);
    this.#forget(digest, chunk);
    this.#drops++;
    return true;
  }

  /** References to `digest` (for tests and checks). */
  refs(digest: K): number {
    const chunk = this.#chunks.get(digest);
    return chunk === undefined ? 0 : refsOf(chunk);
  }

  #forget(digest: K, chunk: number): void {
    this.#chunks.delete(digest);
    const size = sizeOf(chunk);
    this.#bytes -= size;
    // Still in the database until its row's delete ends: kept in smallBytes until removed().
    if (size <= this.#smallAtMost && !this.#leaving.has(digest)) this.#leaving.set(digest, size);
    else if (size <= this.#smallAtMost) this.#smallBytes -= size;
  }

  /** Adds a chunk's size to the counts. */
  #count(size: number): void {
    this.#bytes += size;
    if (size <= this.#smallAtMost) this.#smallBytes += size;
  }
}

/**
 * A chunk's entry: bit 0 verified, bits 1-27 its size (at most MAX_CHUNK_SIZE, 2^26), references
 * from REF up. Up to 7 references it is a small integer; past that a double, exact to 2^53.
 */
const REF = 2 ** 28;
const pack = (size: number, refs: number, verified: boolean) => refs * REF + size * 2 + (verified ? 1 : 0);
const refsOf = (chunk: number) => Math.floor(chunk / REF);
const sizeOf = (chunk: number) => Math.floor((chunk % REF) / 2);
const isVerified = (chunk: number) => chunk % 2 === 1;

/** The digests, each once (most objects have one chunk: no Set made for them). */
function distinct<K extends string>(digests: readonly K[] | K): Iterable<K> {
  return typeof digests === 'string' ? [digests] : digests.length < 2 ? digests : new Set(digests);
}
