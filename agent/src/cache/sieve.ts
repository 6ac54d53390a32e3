interface Node<K> {
  key: K;
  visited: boolean;
  prev: Node<K> | undefined; // towards the head (newer)
  next: Node<K> | undefined; // towards the tail (older)
}

/**
 * SIEVE eviction (Zhang et al., NSDI 2024). New entries go in at the head; a hit only sets a bit; the
 * hand walks from the tail towards the head, clearing bits, and evicts the first unvisited entry.
 * Lower miss ratios than LRU on web-cache traces, a one-time scan cannot flush the hot set, and a hit
 * costs no list surgery. Only the order is kept here; sizes and pins are the caller's.
 */
export class Sieve<K> {
  readonly #nodes = new Map<K, Node<K>>();
  #head: Node<K> | undefined;
  #tail: Node<K> | undefined;
  #hand: Node<K> | undefined;

  get size(): number {
    return this.#nodes.size;
  }

  clear(): void {
    this.#nodes.clear();
    this.#head = this.#tail = this.#hand = undefined;
  }

  has(key: K): boolean {
    return this.#nodes.has(key);
  }

  /** Adds `key` as the newest entry; an existing key is only marked visited. */
  insert(key: K): void {
    const existing = this.#nodes.get(key);
    if (existing) {
      existing.visited = true;
      return;
    }
    const node: Node<K> = { key, visited: false, prev: undefined, next: this.#head };
    if (this.#head) this.#head.prev = node;
    this.#head = node;
    this.#tail ??= node;
    this.#nodes.set(key, node);
  }

  touch(key: K): void {
    const node = this.#nodes.get(key);
    if (node) node.visited = true;
  }

  delete(key: K): void {
    const node = this.#nodes.get(key);
    if (!node) return;
    if (this.#hand === node) this.#hand = node.prev;
    if (node.prev) node.prev.next = node.next;
    else this.#head = node.next;
    if (node.next) node.next.prev = node.prev;
    else this.#tail = node.prev;
    this.#nodes.delete(key);
  }

  /**
   * The first unvisited key `wanted` accepts, looking from the hand as eviction would, at most
   * `maxSteps` entries; nothing changes (no bit cleared, the hand stays). For a preference among
   * victims that must not cost other entries their second chance.
   */
  find(wanted: (key: K) => boolean, maxSteps: number): K | undefined {
    let steps = 0;
    let node = this.#hand ?? this.#tail;
    while (node && steps++ < Math.min(this.#nodes.size, maxSteps)) {
      if (!node.visited && wanted(node.key)) return node.key;
      node = node.prev ?? this.#tail;
    }
    return undefined;
  }

  /**
   * Chooses a victim among keys `evictable` accepts, removes it and returns it; undefined when every
   * key is refused (after clearing visited bits, so a second call may still find one). `maxSteps`
   * bounds the scan (a choice of preference that may give up early).
   */
  evict(evictable: (key: K) => boolean, maxSteps = Number.POSITIVE_INFINITY): K | undefined {
    let steps = 0;
    const limit = Math.min(2 * this.#nodes.size + 1, maxSteps);
    let node = this.#hand ?? this.#tail;
    while (node && steps++ < limit) {
      if (node.visited) {
        node.visited = false;
      } else if (evictable(node.key)) {
        this.#hand = node.prev;
        this.delete(node.key);
        return node.key;
      }
      node = node.prev ?? this.#tail;
    }
    return undefined;
  }
}
