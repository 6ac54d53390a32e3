/**
 * The bounded in-memory tier: verified chunk bytes by digest, least recently used out first. A chunk is
 * only put here after it was verified, so bytes served from here need no second hash.
 *
 * A chunk may be set `cold`: one of an object too large for the tier passing through it (a download
 * from peers, read by clients as it arrives). A cold chunk is served like any other, but a hit does
 * not make it recently used: it ages from its set, and goes when it is older than the least recently
 * used other chunk's last use, or at once, oldest first, while cold chunks take more than
 * COLD_SHARE of the tier. So the tier holds the last stretch of such a download for the readers
 * keeping up with it, shared by all of them, and gives it up once it is older than what local
 * readers use again, at most a quarter of the tier while downloads pass through it. A cold chunk
 * set again not cold (a small object's own) becomes an ordinary one.
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
/** The share of the tier cold chunks may take before they go ahead of every other. */
export const COLD_SHARE = 1 / 4;

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
  cold: boolean;
  /** When it was last used (set, or a hit unless cold), on the tier's own clock. */
  used: number;
}

export class HotTier {
  /** Least recently used first. */
  readonly #entries = new Map<string, Entry>();
  /** Cold chunks, the oldest first. */
  readonly #cold = new Map<string, Entry>();
  /** Bytes of the cold chunks. */
  #coldBytes = 0;
  /** The tier's clock: one tick per set and per hit. */
  #tick = 0;
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

  /** The bytes of the cold chunks it keeps. */
  get coldBytes(): number {
    return this.#coldBytes;
  }

  /** The chunk's bytes; a hit makes a chunk the most recently used, unless it is cold. */
  get(digest: string): Buffer | undefined {
    const entry = this.#entries.get(digest);
    if (!entry) return this.#cold.get(digest)?.data;
    this.#entries.delete(digest);
    this.#entries.set(digest, entry);
    entry.used = ++this.#tick;
    return entry.data;
  }

  /**
   * Keeps a copy of `data` unless it is larger than a quarter of the tier (large objects would only
   * churn it), or the tier has it already (cold or not); `cold`: see the class.
   */
  set(digest: string, data: Buffer, cold = false): void {
    if (data.length === 0 || data.length > this.maxBytes / 4 || this.#entries.has(digest)) return;
    const wasCold = this.#cold.get(digest);
    if (wasCold) {
      if (cold) return;
      // A small object's own chunk, set cold by a download before: an ordinary one from now on.
      this.#cold.delete(digest);
      this.#coldBytes -= wasCold.data.length;
      wasCold.cold = false;
      wasCold.used = ++this.#tick;
      this.#entries.set(digest, wasCold);
      return;
    }
    let entry: Entry;
    if (data.length <= this.#slabbedMax) {
      entry = this.#place(digest, data);
    } else {
      const own = data.byteOffset === 0 && data.buffer.byteLength === data.length;
      entry = { data: own ? data : copyOf(data), slab: undefined, cold: false, used: 0 };
      this.#bytes += data.length;
    }
    entry.cold = cold;
    entry.used = ++this.#tick;
    (cold ? this.#cold : this.#entries).set(digest, entry);
    if (cold) this.#coldBytes += data.length;
    this.#live += data.length;
    this.#shrink();
  }

  delete(digest: string): void {
    const entry = this.#entries.get(digest) ?? this.#cold.get(digest);
    if (!entry) return;
    (entry.cold ? this.#cold : this.#entries).delete(digest);
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
    return { data: place, slab, cold: false, used: 0 };
  }

  #release(digest: string, entry: Entry): void {
    this.#live -= entry.data.length;
    if (entry.cold) this.#coldBytes -= entry.data.length;
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
   * eighth of the tier), then the oldest cold chunks while they take more than COLD_SHARE of it,
   * then whichever was used longest ago: the least recently used chunk or the oldest cold one.
   */
  #shrink(): void {
    // One walk of each order from its oldest: a new iterator per eviction would step over every
    // entry deleted before it (a Map keeps their slots until it rehashes), quadratic in evictions.
    // Neither order changes while it runs (a compaction moves no entry in its order), so the
    // oldest of each, looked at and not yet taken, stays the oldest.
    const order = this.#entries.entries();
    const cold = this.#cold.entries();
    let hot = order.next();
    let aged = cold.next();
    while (this.#bytes > this.maxBytes) {
      if (this.#waste() > Math.max(2 * this.#slabBytes, this.maxBytes / 8) && this.#compact()) continue;
      if (hot.done && aged.done) break;
      const coldFirst =
        hot.done ||
        (!aged.done &&
          (this.#coldBytes > this.maxBytes * COLD_SHARE || aged.value[1].used < hot.value[1].used));
      const [digest, entry] = (coldFirst ? aged.value : hot.value) as [string, Entry];
      if (coldFirst) aged = cold.next();
      else hot = order.next();
      (entry.cold ? this.#cold : this.#entries).delete(digest);
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
      const entry = (this.#entries.get(digest) ?? this.#cold.get(digest))!;
      const moved = this.#place(digest, entry.data);
      entry.data = moved.data; // the same place in its order
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
