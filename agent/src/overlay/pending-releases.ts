import { MAX_RELEASED_KEYS } from '../transport/peer-service.ts';

/** Keys let go of that wait to be told at most (a full disk's eviction of more tells only these). */
export const MAX_PENDING_RELEASES = 16_384;

/**
 * Keys this node let go of (evicted, expired, damaged), gathered until their owners are told with
 * Release (Overlay.announceRelease): one call per owner for many keys, not one per key and owner.
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

  /**
   * Takes every key, grouped by owner (`ownersOf`: a key's owners other than this node), each owner's
   * in calls of at most MAX_RELEASED_KEYS keys.
   */
  take<T>(ownersOf: (key: string) => readonly T[]): [owner: T, keys: string[]][] {
    const byOwner = new Map<T, string[]>();
    for (const key of this.#keys)
      for (const owner of ownersOf(key)) {
        const keys = byOwner.get(owner);
        if (keys) keys.push(key);
        else byOwner.set(owner, [key]);
      }
    this.#keys.clear();
    const calls: [T, string[]][] = [];
    for (const [owner, keys] of byOwner)
      for (let i = 0; i < keys.length; i += MAX_RELEASED_KEYS)
        calls.push([owner, keys.slice(i, i + MAX_RELEASED_KEYS)]);
    return calls;
  }
}
