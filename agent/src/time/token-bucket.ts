/**
 * A token bucket: `rate` tokens a second, refilled continuously, at most `rate` held (a burst of one
 * second's worth). Times are milliseconds from any steady origin (performance.now(), Date.now()).
 */
export class TokenBucket {
  readonly rate: number;
  #tokens: number;
  #atMs: number;

  /** Full at `nowMs`. */
  constructor(rate: number, nowMs: number) {
    this.rate = rate;
    this.#tokens = rate;
    this.#atMs = nowMs;
  }

  /**
   * Takes a token if one is there at `nowMs`; whether it did. A clock that went back (a wall clock
   * set back) neither gives nor takes tokens: time counts again from there.
   */
  take(nowMs: number): boolean {
    const elapsedMs = Math.max(0, nowMs - this.#atMs);
    this.#tokens = Math.min(this.rate, this.#tokens + (elapsedMs / 1000) * this.rate);
    this.#atMs = nowMs;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
