import { createHash } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { atomicWrite, makeShards, SCAN_PARALLEL } from './chunk-files.ts';
import { type Manifest, parseManifest } from './manifest.ts';

/**
 * Manifests on disk, one JSON file per key at `manifests/<2 hex>/<sha256(key)>.json`: the name is a
 * hash of the key, so no key ever becomes a path. Written atomically through `tmp/`.
 */
export class ManifestFiles {
  readonly #dir: string;
  readonly #tmpDir: string;
  readonly #fsync: boolean;

  constructor(dir: string, fsync: boolean) {
    this.#dir = join(dir, 'manifests');
    this.#tmpDir = join(dir, 'tmp');
    this.#fsync = fsync;
  }

  init(): Promise<void> {
    return makeShards(this.#dir);
  }

  path(key: string): string {
    const name = createHash('sha256').update(key).digest('hex');
    return join(this.#dir, name.slice(0, 2), `${name}.json`);
  }

  write(manifest: Manifest): Promise<void> {
    return atomicWrite(
      this.#tmpDir,
      this.path(manifest.key),
      Buffer.from(JSON.stringify(manifest)),
      this.#fsync,
    );
  }

  async remove(key: string): Promise<void> {
    await rm(this.path(key), { force: true });
  }

  /**
   * Every manifest file that parses, passes parseManifest and sits at its key's path; every other
   * file is removed on the way.
   */
  async *scan(isKey: (key: string) => boolean): AsyncGenerator<Manifest> {
    for (const shard of await readdir(this.#dir)) {
      const shardDir = join(this.#dir, shard);
      const names = await readdir(shardDir);
      // SCAN_PARALLEL files at a time (see ChunkFiles.scan).
      for (let i = 0; i < names.length; i += SCAN_PARALLEL) {
        const read = await Promise.all(
          names.slice(i, i + SCAN_PARALLEL).map(async (name) => {
            const file = join(shardDir, name);
            let manifest: Manifest | undefined;
            try {
              manifest = parseManifest(JSON.parse(await readFile(file, 'utf8')), isKey);
            } catch {
              manifest = undefined; // unreadable or invalid: removed below
            }
            if (manifest && this.path(manifest.key) === file) return manifest;
            await rm(file, { recursive: true, force: true });
            return undefined;
          }),
        );
        for (const manifest of read) if (manifest) yield manifest;
      }
    }
  }
}
