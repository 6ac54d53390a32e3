/**
 * Caps a node's upload to peers at `bytesPerSecond` and shares it fairly among groups of requesters
 * (their zones): waiting requests are granted round-robin by group, so a distant or late group gets
 * its share at once even when a near group has many requests queued. This is the starvation guard.
 *
 * Grants are whole chunks; the budget is tracked as "the time the link is busy until", with a burst
 * of `burstBytes` that can go out at once after a quiet spell.
 */
export class UploadLimiter {
  readonly #rate: number;
  readonly #burstMs: number;
  readonly #now: () => number;
  /** Waiting requests per group, in arrival order; group order is round-robin. */
  readonly #queues = new Map<string, { bytes: number; grant: () => void }[]>();
  #busyUntil = 0;
  #timer: NodeJS.Timeout | undefined;

  /** `bytesPerSecond` 0 means no limit. */
  constructor(bytesPerSecond: number, burstBytes: number, now: () => number = () => performance.now()) {
    this.#rate = bytesPerSecond / 1000;
    this.#burstMs = this.#rate > 0 ? burstBytes / this.#rate : 0;
    this.#now = now;
  }

  get limited(): boolean {
    return this.#rate > 0;
  }

  /** Requests waiting, per group. */
  waiting(): Record<string, number> {
    return Object.fromEntries([...this.#queues].map(([group, queue]) => [group, queue.length]));
  }

  /**
   * Resolves when `bytes` may be sent for a requester of `group`; undefined (refused at once) when
   * `maxWaiting` requests of that group are already waiting, so the requester can go elsewhere.
   */
  acquire(bytes: number, group: string, maxWaiting = Infinity): Promise<void> | undefined {
    if (!this.limited) return Promise.resolve();
    if ((this.#queues.get(group)?.length ?? 0) >= maxWaiting) return undefined;
    return new Promise((grant) => {
      const queue = this.#queues.get(group);
      if (queue) queue.push({ bytes, grant });
      else this.#queues.set(group, [{ bytes, grant }]);
      this.#drain();
    });
  }

  #drain(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (;;) {
      const next = this.#queues.entries().next();
      if (next.done) return;
      const now = this.#now();
      const wait = this.#busyUntil - this.#burstMs - now;
      if (wait > 0) {
        // setTimeout takes at most 2^31-1 ms (longer fires at once): a very low rate waits in steps.
        this.#timer = setTimeout(() => this.#drain(), Math.min(Math.ceil(wait), 2 ** 31 - 1));
        this.#timer.unref();
        return;
      }
      const [group, queue] = next.value;
      const request = queue.shift()!;
      // Round robin: the group goes to the back of the line (Map keeps insertion order).
      this.#queues.delete(group);
      if (queue.length > 0) this.#queues.set(group, queue);
      // An idle link is busy until now, not before: the burst is the backlog the check above allows,
      // and counting a quiet spell as credit on top of it would let out twice the burst at once.
      this.#busyUntil = Math.max(this.#busyUntil, now) + request.bytes / this.#rate;
      request.grant();
    }
  }

  close(): void {
    clearTimeout(this.#timer);
    for (const queue of this.#queues.values()) for (const request of queue) request.grant();
    this.#queues.clear();
  }
}
