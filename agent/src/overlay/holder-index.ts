import type { Manifest } from '../cache/manifest.ts';
import type { Holder } from '../domain.ts';
import type { Clock } from '../time/clock.ts';

/** How long a holder record lasts unless renewed. */
export const HOLDER_TTL_MS = 10 * 60_000;
/** Keys remembered at most (oldest forgotten first), and holders per key. */
export const MAX_KEYS = 100_000;
export const MAX_HOLDERS_PER_KEY = 64;

interface Entry {
  manifest: Manifest;
  holders: Map<string, { holder: Holder; until: number }>;
}

/**
 * What an owner knows of the keys it owns: the current manifest and which members hold it. Bounded in
 * keys and holders per key; records expire unless renewed. A newer version (a manifest created later,
 * with another root) replaces the old one and its holders.
 */
export class HolderIndex {
  readonly #entries = new Map<string, Entry>();
  readonly #clock: Clock;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  get size(): number {
    return this.#entries.size;
  }

  record(manifest: Manifest, holder: Holder): void {
    let entry = this.#entries.get(manifest.key);
    if (entry && entry.manifest.root !== manifest.root) {
      if (manifest.createdAtMs < entry.manifest.createdAtMs) return; // an older version: ignore
      entry = undefined;
    }
    entry ??= { manifest, holders: new Map() };
    // A key with its holders full is not renewed, so it keeps its place (the expired stay in front).
    if (entry.holders.size >= MAX_HOLDERS_PER_KEY && !entry.holders.has(holder.nodeId)) return;
    this.#entries.delete(manifest.key); // re-insert: most recently recorded last
    this.#entries.set(manifest.key, entry);
    const now = this.#clock.now();
    entry.holders.set(holder.nodeId, { holder, until: now + HOLDER_TTL_MS });
    // Oldest recorded first: past the bound, and while the oldest has no holder left (records all
    // last the same TTL, so the expired are at the front). Without this, keys never looked up again
    // stayed until the bound, each with its manifest (a signed manifest carries a certificate): the
    // soak's heap grew by a megabyte a minute.
    for (const [key, oldest] of this.#entries) {
      if (this.#entries.size <= MAX_KEYS && [...oldest.holders.values()].some((h) => h.until > now)) break;
      this.#entries.delete(key);
    }
  }

  /** The manifest and live holders of `key`, or undefined. */
  lookup(key: string): { manifest: Manifest; holders: Holder[] } | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    const now = this.#clock.now();
    for (const [id, { until }] of entry.holders) if (until <= now) entry.holders.delete(id);
    if (entry.holders.size === 0) {
      this.#entries.delete(key);
      return undefined;
    }
    return { manifest: entry.manifest, holders: [...entry.holders.values()].map((h) => h.holder) };
  }

  forget(key: string): void {
    this.#entries.delete(key);
  }
}
