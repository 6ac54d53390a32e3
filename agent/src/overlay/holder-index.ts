import type { Manifest } from '../cache/manifest.ts';
import type { Holder } from '../domain.ts';
import type { Clock } from '../time/clock.ts';

/** How long a holder record lasts unless renewed. */
export const HOLDER_TTL_MS = 10 * 60_000;
/** Keys remembered at most (oldest forgotten first), and holders per key. */
export const MAX_KEYS = 100_000;
export const MAX_HOLDERS_PER_KEY = 64;
/**
 * Chunk digests remembered at most, over all keys (oldest forgotten first): each manifest kept holds
 * its whole chunk list (a 64-character hex string per chunk, about 90 bytes in memory). Keys alone
 * bound little, since one Hold may carry a manifest of 65,536 chunks (MAX_CHUNKS, about 6 MB each in
 * memory); this keeps the index under about 45 MB of digests. An object of known size has at most
 * 512 chunks below 32 GiB (chunking.ts), so 100,000 keys of five chunks on average fit.
 */
export const MAX_DIGESTS = 500_000;

interface Entry {
  manifest: Manifest;
  holders: Map<string, { holder: Holder; until: number }>;
}

export interface HolderIndexOptions {
  /**
   * Whether this node keeps holders of `key` (it owns it, by placement as it sees it): a record of
   * any other key is ignored. Without it, every key is kept.
   */
  owns?: (key: string) => boolean;
}

/**
 * What an owner knows of the keys it owns: the current manifest and which members hold it. Only keys
 * this node owns are recorded (a member's Hold of any other key is ignored: readers ask owners, and
 * a member could otherwise fill the index with keys nobody asks this node about). Bounded in keys,
 * in chunk digests over all keys and in holders per key; records expire unless renewed. A newer
 * version (a manifest created later, with another root) replaces the old one and its holders.
 */
export class HolderIndex {
  readonly #entries = new Map<string, Entry>();
  readonly #clock: Clock;
  readonly #owns: ((key: string) => boolean) | undefined;
  /** The chunk digests of every manifest kept. */
  #digests = 0;

  constructor(clock: Clock, opts: HolderIndexOptions = {}) {
    this.#clock = clock;
    this.#owns = opts.owns;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The chunk digests held over all keys (at most MAX_DIGESTS). */
  get digests(): number {
    return this.#digests;
  }

  record(manifest: Manifest, holder: Holder): void {
    if (this.#owns && !this.#owns(manifest.key)) return;
    if (manifest.chunks.length > MAX_DIGESTS) return; // it would push out every other key
    let entry = this.#entries.get(manifest.key);
    if (entry && entry.manifest.root !== manifest.root) {
      if (manifest.createdAtMs < entry.manifest.createdAtMs) return; // an older version: ignore
      entry = undefined;
    }
    // A key with its holders full is not renewed, so it keeps its place (the expired stay in front).
    if (entry && entry.holders.size >= MAX_HOLDERS_PER_KEY && !entry.holders.has(holder.nodeId)) return;
    if (!entry) {
      this.#drop(manifest.key); // the older version, if any
      entry = { manifest, holders: new Map() };
      this.#digests += manifest.chunks.length;
    }
    this.#entries.delete(manifest.key); // re-insert: most recently recorded last
    this.#entries.set(manifest.key, entry);
    const now = this.#clock.now();
    entry.holders.set(holder.nodeId, { holder, until: now + HOLDER_TTL_MS });
    // Oldest recorded first: past the bounds, and while the oldest has no holder left (records all
    // last the same TTL, so the expired are at the front). Without this, keys never looked up again
    // stayed until the bound, each with its manifest (a signed manifest carries a certificate): the
    // soak's heap grew by a megabyte a minute.
    for (const [key, oldest] of this.#entries) {
      if (
        this.#entries.size <= MAX_KEYS &&
        this.#digests <= MAX_DIGESTS &&
        [...oldest.holders.values()].some((h) => h.until > now)
      )
        break;
      this.#drop(key);
    }
  }

  /**
   * The manifest and live holders of `key`, or undefined; none once that version has expired (its
   * holders drop it then, and do not say so: Overlay.announceRelease).
   */
  lookup(key: string): { manifest: Manifest; holders: Holder[] } | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    const now = this.#clock.now();
    if (entry.manifest.expiresAtMs !== undefined && entry.manifest.expiresAtMs <= now) {
      this.#drop(key);
      return undefined;
    }
    for (const [id, { until }] of entry.holders) if (until <= now) entry.holders.delete(id);
    if (entry.holders.size === 0) {
      this.#drop(key);
      return undefined;
    }
    return { manifest: entry.manifest, holders: [...entry.holders.values()].map((h) => h.holder) };
  }

  /** Forgets `nodeId` as a holder of `key` (it let the object go), and the key with its last holder. */
  release(key: string, nodeId: string): void {
    const entry = this.#entries.get(key);
    if (!entry?.holders.delete(nodeId)) return;
    if (entry.holders.size === 0) this.#drop(key);
  }

  forget(key: string): void {
    this.#drop(key);
  }

  #drop(key: string): void {
    const entry = this.#entries.get(key);
    if (!entry) return;
    this.#entries.delete(key);
    this.#digests -= entry.manifest.chunks.length;
  }
}
