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
export class Tombstones {
  readonly #file: string;
  readonly #tmpDir: string;
  readonly #clock: Clock;
  readonly #ttlMs: number;
  #entries = new Map<string, number>();
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
        for (const [key, at] of Object.entries(raw))
          if (Number.isSafeInteger(at)) t.#entries.set(key, at as number);
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') t.#entries.clear(); // unreadable: start empty
    }
    return t;
  }

  /** When `key` was purged, if it was (and the record has not expired). */
  purgedAt(key: string): number | undefined {
    const at = this.#entries.get(key);
    if (at !== undefined && at + this.#ttlMs <= this.#clock.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return at;
  }

  /** Whether a version of `key` created at `createdAtMs` is purged. */
  isPurged(key: string, createdAtMs: number): boolean {
    const at = this.purgedAt(key);
    return at !== undefined && createdAtMs <= at;
  }

  /** Records a purge (keeping the later of two) and saves. */
  async record(key: string, at: number): Promise<void> {
    if ((this.#entries.get(key) ?? -1) >= at) return;
    this.#entries.set(key, at);
    await this.#save();
  }

  #save(): Promise<void> {
    const now = this.#clock.now();
    for (const [key, at] of this.#entries) if (at + this.#ttlMs <= now) this.#entries.delete(key);
    const data = Buffer.from(JSON.stringify(Object.fromEntries(this.#entries)));
    // Writes go one after another; a failed one fails its own caller only, and the next write is
    // tried all the same (it carries every entry, so the file heals once the disk does).
    const write = this.#writing
      .catch(() => undefined)
      .then(() => atomicWrite(this.#tmpDir, this.#file, data, true));
    this.#writing = write;
    return write;
  }
}
