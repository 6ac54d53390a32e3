import { createHash } from 'node:crypto';
import { readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SCAN_PARALLEL } from './chunk-files.ts';
import { type Manifest, parseManifest } from './manifest.ts';

/**
 * Manifest files as stores kept them before the database (store-db.ts): one JSON file per key at
 * `manifests/<2 hex>/<sha256(key)>.json`. Only read, once, to move them into the database.
 */
export class ManifestFiles {
  readonly #dir: string;
  readonly #imported: string;

  constructor(dir: string) {
    this.#dir = join(dir, 'manifests');
    this.#imported = join(dir, 'manifests.imported');
  }

  async exists(): Promise<boolean> {
    return (await stat(this.#dir).catch(() => undefined))?.isDirectory() ?? false;
  }

  /**
   * Every file is in the database (committed): `manifests/` becomes `manifests.imported`, at once
   * (a rename), so a start cut short while the files are removed never finds half of them and
   * takes that half as the truth.
   */
  async markImported(): Promise<void> {
    await rm(this.#imported, { recursive: true, force: true });
    await rename(this.#dir, this.#imported);
  }

  /** The database they went into was set aside: they are to be read again. */
  async restoreImported(): Promise<void> {
    if (await this.exists()) return;
    await rename(this.#imported, this.#dir).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }

  /** Once the store has opened on the database they went into. */
  async removeImported(): Promise<void> {
    await rm(this.#imported, { recursive: true, force: true });
  }

  path(key: string): string {
    const name = createHash('sha256').update(key).digest('hex');
    return join(this.#dir, name.slice(0, 2), `${name}.json`);
  }

  /**
   * Every manifest file that parses, passes parseManifest and sits at its key's path; every other
   * file is removed on the way.
   */
  async *scan(isKey: (key: string) => boolean): AsyncGenerator<Manifest> {
    for (const shard of await readdir(this.#dir)) {
      const shardDir = join(this.#dir, shard);
      const names = await readdir(shardDir).catch(() => [] as string[]); // not a folder: removed with the rest
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
