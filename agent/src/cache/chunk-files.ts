import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { isDigest } from './chunking.ts';
import { InsufficientStorageError } from './errors.ts';

/**
 * Chunks on disk, one file per chunk at `chunks/<first two hex>/<digest>`. File names come only from
 * digests (never from keys), so no client input ever becomes a path. Writes go to `tmp/` and are
 * renamed into place, so a crash never leaves a half-written file under a chunk's name.
 */
/** Files looked at at once when the store is scanned at start. */
export const SCAN_PARALLEL = 64;
/** Every this many chunk files written, the folder of the last is measured again (folderBytes). */
const FOLDER_RECHECK = 16;

export class ChunkFiles {
  readonly #dir: string;
  readonly #chunkDir: string;
  readonly #tmpDir: string;
  /** What each folder takes on disk (allocated blocks), as last measured, and their sum. */
  readonly #folders = new Map<string, number>();
  #folderBytes = 0;
  #written = 0;

  readonly fsync: boolean;

  constructor(dir: string, fsync: boolean) {
    this.fsync = fsync;
    this.#dir = dir;
    this.#chunkDir = join(dir, 'chunks');
    this.#tmpDir = join(dir, 'tmp');
  }

  /** Creates the folders and removes what a crashed write left in `tmp/`. */
  async init(): Promise<void> {
    await rm(this.#tmpDir, { recursive: true, force: true });
    await mkdir(this.#tmpDir, { recursive: true });
    const shards = await makeShards(this.#chunkDir);
    await Promise.all(
      [this.#dir, this.#chunkDir, this.#tmpDir, ...shards].map((path) => this.#measure(path)),
    );
  }

  /**
   * What the store's folders take on disk (a folder grows, in whole blocks, with the files it
   * names): measured at init, and a shard again after every FOLDER_RECHECK files written.
   */
  get folderBytes(): number {
    return this.#folderBytes;
  }

  async #measure(folder: string): Promise<void> {
    const info = await stat(folder).catch(() => undefined); // gone: the last figure stands
    if (info === undefined) return;
    const bytes = info.blocks * 512;
    this.#folderBytes += bytes - (this.#folders.get(folder) ?? 0);
    this.#folders.set(folder, bytes);
  }

  path(digest: string): string {
    return under(under(this.#chunkDir, digest.slice(0, 2)), digest);
  }

  /** Writes `data` atomically under `digest`; ENOSPC becomes InsufficientStorageError. */
  async write(digest: string, data: Uint8Array): Promise<void> {
    const path = this.path(digest);
    await atomicWrite(this.#tmpDir, path, data, this.fsync);
    if (++this.#written % FOLDER_RECHECK === 0) await this.#measure(dirname(path));
  }

  /**
   * The whole file in one read (readFile would take 512 KiB per event-loop turn), into a new buffer
   * or into the start of `into(size)`'s when that gives one.
   */
  async read(digest: string, into?: (size: number) => Buffer | undefined): Promise<Buffer> {
    const file = await open(this.path(digest), 'r');
    try {
      const { size } = await file.stat();
      const data = into?.(size)?.subarray(0, size) ?? Buffer.allocUnsafe(size);
      let offset = 0;
      while (offset < size) {
        const { bytesRead } = await file.read(data, offset, size - offset, offset);
        if (bytesRead === 0) break; // shrank under us: the short buffer fails verification
        offset += bytesRead;
      }
      return offset === size ? data : data.subarray(0, offset);
    } finally {
      await file.close();
    }
  }

  async remove(digest: string): Promise<void> {
    await rm(this.path(digest), { force: true });
  }

  /** Every chunk file with its size; files whose names are not digests are removed. */
  async *scan(): AsyncGenerator<{ digest: string; size: number }> {
    for (const shard of await readdir(this.#chunkDir)) {
      const shardDir = under(this.#chunkDir, shard);
      const names = await readdir(shardDir);
      // A shard's files are looked at SCAN_PARALLEL at a time: at a restart with many small
      // objects, the time is the file system's latency, not the CPU's.
      for (let i = 0; i < names.length; i += SCAN_PARALLEL) {
        const found = await Promise.all(
          names.slice(i, i + SCAN_PARALLEL).map(async (name) => {
            const file = under(shardDir, name);
            if (!isDigest(name) || name.slice(0, 2) !== shard) {
              await rm(file, { recursive: true, force: true });
              return undefined;
            }
            return { digest: name, size: (await stat(file)).size };
          }),
        );
        for (const chunk of found) if (chunk) yield chunk;
      }
    }
  }
}

/**
 * `join(dir, name)` for a `dir` that `join` made (normalized, no trailing separator) and a `name`
 * of one path segment (a shard or a file name `readdir` gave): a concatenation, without `join`'s
 * normalizing loop. Start-up alone called that loop 512 times, enough for V8 to optimize it with
 * TurboFan, which pages in about 5 MiB of compiler code that a freshly started agent otherwise does
 * without until traffic makes something hot (scripts/build.test.ts checks; docs/deploy.md).
 */
function under(dir: string, name: string): string {
  return `${dir}${sep}${name}`;
}

/**
 * Creates `dir` and its 256 shard folders `00`..`ff`, so writes never need a mkdir of their own;
 * returns the shards' paths.
 */
export async function makeShards(dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const shards = Array.from({ length: 256 }, (_, i) => under(dir, i.toString(16).padStart(2, '0')));
  await Promise.all(shards.map((shard) => mkdir(shard, { recursive: true })));
  return shards;
}

/**
 * Writes `data` to a fresh file in `tmpDir`, optionally fsyncs it, and renames it to `target`, whose
 * folder must exist. Readers see either the old file, no file, or the complete new one.
 */
export async function atomicWrite(
  tmpDir: string,
  target: string,
  data: Uint8Array,
  fsync: boolean,
): Promise<void> {
  const tmp = join(tmpDir, randomBytes(12).toString('hex'));
  try {
    const file = await open(tmp, 'wx');
    try {
      // One positional write per call (writeFile would take 512 KiB per event-loop turn).
      for (let offset = 0; offset < data.length;) {
        offset += (await file.write(data, offset, data.length - offset, offset)).bytesWritten;
      }
      if (fsync) await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, target);
  } catch (error) {
    await rm(tmp, { force: true });
    if ((error as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new InsufficientStorageError('the disk is full', { cause: error });
    }
    throw error;
  }
}
