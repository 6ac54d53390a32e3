/**
 * The bounded in-memory tier: verified chunk bytes by digest, least recently used out first. A chunk is
 * only put here after it was verified, so bytes served from here need no second hash.
 *
 * The tier keeps its own memory and counts all of it against its bound. A chunk handed in is usually
 * a view into memory that is not the tier's (a request body, a row SQLite returned, a slice of Node's
 * Buffer pool), which would keep the whole of that memory alive; so it is copied:
 * - small chunks (at most an eighth of a slab) into slabs of SLAB_BYTES that the tier fills one after
 *   another and lets go of whole. Thousands of long-lived small Buffers, each a malloc of its own,
 *   would sit in malloc's main arena among the short-lived ones and keep it from giving memory back
 *   (the soak's RSS kept rising while the V8 heap and Buffers were flat); a slab is one allocation
 *   past the mmap threshold, returned to the system when the tier lets it go.
 * - larger chunks into a Buffer of their own, unless they already are one.
 * A slab's bytes are never written twice: a chunk evicted or deleted leaves its place unused, and a
 * slab whose chunks are mostly gone is compacted (its live chunks copied to the newest slab, and the
 * slab let go). A view handed out earlier keeps the old bytes, which stay as they were, alive until its
 * reader is done with them.
 */

/** The size of a slab (or a quarter of the tier, when the tier is smaller). */
export const SLAB_BYTES = 2 ** 20;
/**
 * A slab at most this full may be compacted (moving at most 7 bytes for each byte it frees). With
 * one half instead, a tier under random reads settled at 57-60% of its bound in chunks (its hit rate
 * 0.19 where keeping every Buffer as handed gave 0.33); with 7/8, at 89%, hit rate 0.29, compaction
 * moving about twice the bytes set (a one-off script on a 64 MiB tier of 4 KiB chunks).
 */
export const COMPACT_FILL = 7 / 8;

class Slab {
  readonly memory: Buffer;
  /** Bytes handed out from the start (never handed out again). */
  used = 0;
  /** Bytes of chunks still in the tier. */
  live = 0;
  readonly digests = new Set<string>();
  constructor(size: number) {
    this.memory = Buffer.allocUnsafeSlow(size);
  }
}

interface Entry {
  data: Buffer;
  slab: Slab | undefined;
}

export class HotTier {
  /** Least recently used first. */
  readonly #entries = new Map<string, Entry>();
  readonly #slabs = new Set<Slab>();
  /** Slabs at most COMPACT_FILL full: those a compaction may take (the one being filled aside). */
  readonly #sparse = new Set<Slab>();
  #current: Slab | undefined;
  /** Memory held: every slab whole, and the chunks kept in Buffers of their own. */
  #bytes = 0;
  /** Bytes of chunks kept, wherever they are. */
  #live = 0;
  /** Bytes of chunks kept in slabs. */
  #slabbed = 0;
  readonly #slabBytes: number;
  readonly #slabbedMax: number;

  readonly maxBytes: number;
  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
    this.#slabBytes = Math.min(SLAB_BYTES, Math.floor(maxBytes / 4));
    this.#slabbedMax = Math.floor(this.#slabBytes / 8);
  }

  /** The memory the tier holds (at most maxBytes): its chunks and the unused room of its slabs. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The bytes of the chunks it keeps. */
  get liveBytes(): number {
    return this.#live;
  }

  /** How many slabs it holds. */
  get slabs(): number {
    return this.#slabs.size;
  }

  get(digest: string): Buffer | undefined {
    const entry = this.#entries.get(digest);
    if (!entry) return undefined;
    this.#entries.delete(digest);
    this.#entries.set(digest, entry);
    return entry.data;
  }

  /** Keeps a copy of `data` unless it is larger than a quarter of the tier (large objects would only churn it). */
  set(digest: string, data: Buffer): void {
    if (data.length === 0 || data.length > this.maxBytes / 4 || this.#entries.has(digest)) return;
    if (data.length <= this.#slabbedMax) {
      this.#entries.set(digest, this.#place(digest, data));
    } else {
      const own = data.byteOffset === 0 && data.buffer.byteLength === data.length;
      this.#entries.set(digest, { data: own ? data : copyOf(data), slab: undefined });
      this.#bytes += data.length;
    }
    this.#live += data.length;
    this.#shrink();
  }

  delete(digest: string): void {
    const entry = this.#entries.get(digest);
    if (!entry) return;
    this.#entries.delete(digest);
    this.#release(digest, entry);
  }

  /** `data` copied into the newest slab (a new one when it does not fit). */
  #place(digest: string, data: Buffer): Entry {
    let slab = this.#current;
    if (!slab || slab.used + data.length > slab.memory.length) {
      slab = new Slab(this.#slabBytes);
      this.#slabs.add(slab);
      this.#bytes += this.#slabBytes;
      this.#current = slab;
    }
    const place = slab.memory.subarray(slab.used, slab.used + data.length);
    data.copy(place);
    slab.used += data.length;
    slab.live += data.length;
    this.#slabbed += data.length;
    slab.digests.add(digest);
    if (slab.live > this.#slabBytes * COMPACT_FILL) this.#sparse.delete(slab);
    return { data: place, slab };
  }

  #release(digest: string, entry: Entry): void {
    this.#live -= entry.data.length;
    const slab = entry.slab;
    if (!slab) {
      this.#bytes -= entry.data.length;
      return;
    }
    slab.live -= entry.data.length;
    this.#slabbed -= entry.data.length;
    slab.digests.delete(digest);
    if (slab.live === 0) this.#drop(slab);
    else if (slab.live <= this.#slabBytes * COMPACT_FILL) this.#sparse.add(slab);
  }

  #drop(slab: Slab): void {
    this.#slabs.delete(slab);
    this.#sparse.delete(slab);
    this.#bytes -= this.#slabBytes;
    if (this.#current === slab) this.#current = undefined;
  }

  /**
   * Back within the bound: slabs mostly unused are compacted first (while they waste more than an
   * eighth of the tier), then the least recently used chunks go.
   */
  #shrink(): void {
    // One walk from the least recently used: a new iterator per eviction would step over every
    // entry deleted before it (a Map keeps their slots until it rehashes), quadratic in evictions.
    // A compaction changes no entry's place in the order, so the walk stays valid.
    const order = this.#entries.entries();
    while (this.#bytes > this.maxBytes) {
      if (this.#waste() > Math.max(2 * this.#slabBytes, this.maxBytes / 8) && this.#compact()) continue;
      const oldest = order.next();
      if (oldest.done) break;
      const [digest, entry] = oldest.value;
      this.#entries.delete(digest);
      this.#release(digest, entry);
    }
  }

  /** The room of slabs that holds no chunk (used and let go, or at the end of a slab). */
  #waste(): number {
    return this.#slabs.size * this.#slabBytes - this.#slabbed;
  }

  /**
   * Moves the chunks of the emptiest slab (not the one being filled) to the newest, and lets the slab
   * go; false when no slab is at most COMPACT_FILL full (moving would cost more than it gives).
   */
  #compact(): boolean {
    let emptiest: Slab | undefined;
    for (const slab of this.#sparse)
      if (slab !== this.#current && (!emptiest || slab.live < emptiest.live)) emptiest = slab;
    if (!emptiest) return false;
    for (const digest of emptiest.digests) {
      const entry = this.#entries.get(digest)!;
      const moved = this.#place(digest, entry.data);
      entry.data = moved.data; // the same place in the order
      entry.slab = moved.slab;
    }
    this.#slabbed -= emptiest.live;
    this.#drop(emptiest);
    return true;
  }
}

function copyOf(data: Buffer): Buffer {
  const copy = Buffer.allocUnsafeSlow(data.length);
  data.copy(copy);
  return copy;
}
