/** Wall-clock time, injectable so TTL logic can be tested without waiting. */
export interface Clock {
  now(): number;
}

/**
 * How far ahead of this node's clock another node's may run: a time another node signed (a purge, a
 * version) further ahead than this is refused.
 */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;

export const systemClock: Clock = { now: () => Date.now() };

/** A clock that only moves when told to. */
export class FakeClock implements Clock {
  #ms: number;
  constructor(startMs = 1_700_000_000_000) {
    this.#ms = startMs;
  }
  now(): number {
    return this.#ms;
  }
  advance(ms: number): void {
    this.#ms += ms;
  }
}
