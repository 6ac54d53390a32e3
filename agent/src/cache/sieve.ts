/** What an entry needs to sit in a Sieve: the list's links and its bit, kept on the entry itself. */
export interface SieveNode<N> {
  visited: boolean;
  prev: N | undefined; // towards the head (newer)
  next: N | undefined; // towards the tail (older)
}

/**
 * SIEVE eviction (Zhang et al., NSDI 2024). New entries go in at the head; a hit only sets a bit; the
 * hand walks from the tail towards the head, clearing bits, and evicts the first unvisited entry.
 * Lower miss ratios than LRU on web-cache traces, a one-time scan cannot flush the hot set, and a hit
 * costs no list surgery. Only the order is kept here; sizes and pins are the caller's.
 *
 * The list is intrusive: the caller's entries carry the links (SieveNode), so an entry costs no map
 * slot and no node object of its own (a store of a million small objects holds a million of them).
 * A hit is `entry.visited = true`.
 */
export class Sieve<N extends SieveNode<N>> {
  #size = 0;
  #head: N | undefined;
  #tail: N | undefined;
  #hand: N | undefined;

  get size(): number {
    return this.#size;
  }

  clear(): void {
    this.#head = this.#tail = this.#hand = undefined;
    this.#size = 0;
  }

  /** Whether `node` is in the list. */
  has(node: N): boolean {
    return node.prev !== undefined || node.next !== undefined || this.#head === node;
  }

  /** Adds `node` (not in the list) as the newest entry, unvisited. */
  insert(node: N): void {
    node.visited = false;
    node.prev = undefined;
    node.next = this.#head;
    if (this.#head) this.#head.prev = node;
    this.#head = node;
    this.#tail ??= node;
    this.#size++;
  }

  /**
   * Adds `node` (not in the list) as the oldest entry, unvisited: the next the hand looks at. For
   * entries known from before (a start loading its index newest first while new entries go in at
   * the head). With the hand at the tail (or not placed), that is the tail; once the hand has moved,
   * the tail is behind it and would be looked at last: the node goes in at the hand instead.
   */
  append(node: N): void {
    node.visited = false;
    // Just tail-side of the entry the hand looks at next (the tail when it is not placed), and the
    // hand on it.
    const next = this.#hand ?? this.#tail;
    node.prev = next;
    node.next = next?.next;
    if (node.next) node.next.prev = node;
    else this.#tail = node;
    if (next) next.next = node;
    else this.#head = node;
    if (this.#hand) this.#hand = node;
    this.#size++;
  }

  /** Takes `node` out of the list; nothing when it is not in it. */
  delete(node: N): void {
    if (!this.has(node)) return;
    if (this.#hand === node) this.#hand = node.prev;
    if (node.prev) node.prev.next = node.next;
    else this.#head = node.next;
    if (node.next) node.next.prev = node.prev;
    else this.#tail = node.prev;
    node.prev = node.next = undefined;
    this.#size--;
  }

  /**
   * The first unvisited entry `wanted` accepts, looking from the hand as eviction would, at most
   * `maxSteps` entries; nothing changes (no bit cleared, the hand stays). For a preference among
   * victims that must not cost other entries their second chance.
   */
  find(wanted: (node: N) => boolean, maxSteps: number): N | undefined {
    let steps = 0;
    let node = this.#hand ?? this.#tail;
    while (node && steps++ < Math.min(this.#size, maxSteps)) {
      if (!node.visited && wanted(node)) return node;
      node = node.prev ?? this.#tail;
    }
    return undefined;
  }

  /**
   * Chooses a victim among entries `evictable` accepts, removes it and returns it; undefined when
   * every one is refused (after clearing visited bits, so a second call may still find one).
   * `maxSteps` bounds the scan (a choice of preference that may give up early).
   */
  evict(evictable: (node: N) => boolean, maxSteps = Number.POSITIVE_INFINITY): N | undefined {
    let steps = 0;
    const limit = Math.min(2 * this.#size + 1, maxSteps);
    let node = this.#hand ?? this.#tail;
    while (node && steps++ < limit) {
      if (node.visited) {
        node.visited = false;
      } else if (evictable(node)) {
        this.#hand = node.prev;
        this.delete(node);
        return node;
      }
      node = node.prev ?? this.#tail;
    }
    return undefined;
  }
}
