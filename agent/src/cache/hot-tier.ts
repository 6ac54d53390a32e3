/**
 * The bounded in-memory tier: verified chunk bytes by digest, least recently used out first. A chunk is
 * only put here after it was verified, so bytes served from here need no second hash.
 */
export class HotTier {
  readonly #chunks = new Map<string, Buffer>();
  #bytes = 0;

  readonly maxBytes: number;
  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get(digest: string): Buffer | undefined {
    const data = this.#chunks.get(digest);
    if (data) {
      this.#chunks.delete(digest);
      this.#chunks.set(digest, data);
    }
    return data;
  }

  /** Keeps `data` unless it is larger than a quarter of the tier (large objects would only churn it). */
  set(digest: string, data: Buffer): void {
    if (data.length > this.maxBytes / 4 || this.#chunks.has(digest)) return;
    this.#chunks.set(digest, data);
    this.#bytes += data.length;
    for (const [victim, bytes] of this.#chunks) {
      if (this.#bytes <= this.maxBytes) break;
      this.#chunks.delete(victim);
      this.#bytes -= bytes.length;
    }
  }

  delete(digest: string): void {
    const data = this.#chunks.get(digest);
    if (!data) return;
    this.#chunks.delete(digest);
    this.#bytes -= data.length;
  }
}
