import { MAX_RELEASED_KEYS } from '../transport/peer-service.ts';

/** Keys let go of that wait to be told at most (a full disk's eviction of more tells only these). */
export const MAX_PENDING_RELEASES = 16_384;
/**
 * Keys taken at once (take): finding a key's owners hashes it against every member, so a slice of a
 * few hundred keys keeps one turn of the event loop short even in a mesh of a thousand nodes.
 */
export const RELEASE_SLICE = 256;

/**
 * Keys this node let go of (evicted, damaged), gathered until their owners are told with Release
 * (Overlay.announceRelease): one call per owner for many keys, not one per key and owner.
 */
export class PendingReleases {
  readonly #keys = new Set<string>();
  readonly #max: number;

  constructor(max = MAX_PENDING_RELEASES) {
    this.#max = max;
  }

  get size(): number {
    return this.#keys.size;
  }

  /** Adds `key`; false when full (it is not told: the owners' records of it expire instead). */
  add(key: string): boolean {
    if (this.#keys.size >= this.#max && !this.#keys.has(key)) return false;
    this.#keys.add(key);
    return true;
  }

  /** `key` is held again before its owners were told it was let go: they are not told. */
  cancel(key: string): void {
    this.#keys.delete(key);
  }

  clear(): void {
    this.#keys.clear();
  }

  /**
   * Takes the oldest `slice` keys (at most MAX_RELEASED_KEYS, one call's worth), grouped by owner
   * (`ownersOf`: a key's owners other than this node): one call per owner.
   */
  take<T>(ownersOf: (key: string) => readonly T[], slice = RELEASE_SLICE): [owner: T, keys: string[]][] {
    const byOwner = new Map<T, string[]>();
    let taken = 0;
    for (const key of this.#keys) {
      if (taken++ === Math.min(slice, MAX_RELEASED_KEYS)) break;
      this.#keys.delete(key);
      for (const owner of ownersOf(key)) {
        const keys = byOwner.get(owner);
        if (keys) keys.push(key);
        else byOwner.set(owner, [key]);
      }
    }
    return [...byOwner];
  }
}
