import { type NodeSignature, parseSignature } from './manifest.ts';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock } from '../time/clock.ts';
import { atomicWrite } from './chunk-files.ts';

/** How long a purge is remembered by default. */
export const DEFAULT_TOMBSTONE_TTL_MS = 7 * 24 * 3600 * 1000;

/**
 * Purged keys and when they were purged, kept on disk (`tombstones.json`, written atomically) so a
 * purge outlives restarts. A version of a key created at or before its purge is dead: it is not
 * stored, served or replicated again. Tombstones expire after `ttlMs`.
 */
/** Tombstones kept at most (each up to about 1 KB with its signature). */
export const MAX_TOMBSTONES = 50_000;

export class Tombstones {
  readonly #file: string;
  readonly #tmpDir: string;
  readonly #clock: Clock;
  readonly #ttlMs: number;
  #entries = new Map<string, { at: number; signature?: NodeSignature }>();
  #writing: Promise<void> = Promise.resolve();

  private constructor(dir: string, clock: Clock, ttlMs: number) {
    this.#file = join(dir, 'tombstones.json');
    this.#tmpDir = join(dir, 'tmp');
    this.#clock = clock;
    this.#ttlMs = ttlMs;
  }

  static async open(dir: string, clock: Clock, ttlMs = DEFAULT_TOMBSTONE_TTL_MS): Promise<Tombstones> {
    const t = new Tombstones(dir, clock, ttlMs);
    await mkdir(t.#tmpDir, { recursive: true });
    try {
      const raw: unknown = JSON.parse(await readFile(t.#file, 'utf8'));
      if (typeof raw === 'object' && raw !== null) {
        for (const [key, entry] of Object.entries(raw)) {
          // A time, or { at, signature } for a purge with its signer's proof.
          if (Number.isSafeInteger(entry)) t.#entries.set(key, { at: entry as number });
          else if (typeof entry === 'object' && entry !== null) {
            const { at, signature } = entry as { at?: unknown; signature?: unknown };
            const proof = parseSignature(signature);
            if (Number.isSafeInteger(at))
              t.#entries.set(key, { at: at as number, ...(proof ? { signature: proof } : {}) });
          }
        }
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') t.#entries.clear(); // unreadable: start empty
    }
    return t;
  }

  /** When `key` was purged, if it was (and the record has not expired). */
  purgedAt(key: string): number | undefined {
    const entry = this.#entries.get(key);
    if (entry !== undefined && entry.at + this.#ttlMs <= this.#clock.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry?.at;
  }

  /** The signature of `key`'s purge, when it came with one (a "purged" answer shows it). */
  signatureOf(key: string): NodeSignature | undefined {
    return this.purgedAt(key) === undefined ? undefined : this.#entries.get(key)?.signature;
  }

  /** Whether a version of `key` created at `createdAtMs` is purged. */
  isPurged(key: string, createdAtMs: number): boolean {
    const at = this.purgedAt(key);
    return at !== undefined && createdAtMs <= at;
  }

  /**
   * Records a purge, with its signature when it has one (keeping the later of two), and saves. At
   * most MAX_TOMBSTONES are kept: past them the oldest recorded go first.
   */
  async record(key: string, at: number, signature?: NodeSignature): Promise<void> {
    if ((this.#entries.get(key)?.at ?? -1) >= at) return;
    this.#entries.delete(key); // to the end: the newest
    this.#entries.set(key, { at, ...(signature ? { signature } : {}) });
    for (const oldest of this.#entries.keys()) {
      if (this.#entries.size <= MAX_TOMBSTONES) break;
      this.#entries.delete(oldest);
    }
    await this.#save();
  }

  #save(): Promise<void> {
    const now = this.#clock.now();
    for (const [key, { at }] of this.#entries) if (at + this.#ttlMs <= now) this.#entries.delete(key);
    const data = Buffer.from(
      JSON.stringify(Object.fromEntries([...this.#entries].map(([key, e]) => [key, e.signature ? e : e.at]))),
    );
    // Writes go one after another; a failed one fails its own caller only, and the next write is
    // tried all the same (it carries every entry, so the file heals once the disk does).
    const write = this.#writing
      .catch(() => undefined)
      .then(() => atomicWrite(this.#tmpDir, this.#file, data, true));
    this.#writing = write;
    return write;
  }
}
