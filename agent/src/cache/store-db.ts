import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { InsufficientStorageError } from './errors.ts';
import { type Manifest, parseManifest } from './manifest.ts';

/**
 * Chunks of at most this many bytes are kept in the database, not in files of their own: a file
 * takes at least one 4 KiB block and an inode, so a 1 KiB object in files (a chunk and a manifest)
 * took 8 KiB on disk. Larger chunks stay files, read and written off the event loop.
 */
export const PACKED_CHUNK_BYTES = 16 * 1024;
/**
 * What one manifest's row is counted for in the store's byte limit: its fields (key, digests, the
 * signature) and, for the rest, 160 bytes: the row's header and integers, its share of the b-tree's
 * pages, and the row header of a small chunk. An estimate, matched to `scale`: 100,000 objects of
 * 1 KiB took 128 MiB, 293 bytes each beyond their data, where this counts 311.
 */
export function manifestRowBytes(manifest: Manifest): number {
  return (
    160 +
    Buffer.byteLength(manifest.key) +
    32 * (manifest.chunks.length + 1) +
    (manifest.signature ? 72 + (manifest.signature.by?.length ?? 0) : 0) +
    (manifest.contentType?.length ?? 0)
  );
}

/** The database's file under the store's folder (SQLite adds `-wal` and `-shm` beside it). */
export const DB_FILE = 'index.db';
/** The most writes committed in one transaction (each transaction blocks the event loop). */
const MAX_BATCH = 256;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS certificates (id INTEGER PRIMARY KEY, der TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS manifests (
  key TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  chunk_size INTEGER NOT NULL,
  chunks BLOB NOT NULL,
  root BLOB NOT NULL,
  created INTEGER NOT NULL,
  expires INTEGER,
  content_type TEXT,
  certificate INTEGER,
  signature BLOB,
  signed_by TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (digest BLOB NOT NULL UNIQUE, data BLOB NOT NULL);
`;

interface Write {
  run(): void;
  resolve(): void;
  reject(error: unknown): void;
}

/**
 * A manifest as `manifests()` reads it, in the SELECT's order (digests as lower-case hex). Typed as
 * what SQLite may hold, whatever the schema says: a damaged or edited file may hold anything.
 */
type ManifestRow = [
  key: unknown,
  size: unknown,
  chunkSize: unknown,
  chunks: unknown,
  root: unknown,
  created: unknown,
  expires: unknown,
  contentType: unknown,
  certificate: unknown,
  signature: unknown,
  signedBy: unknown,
];

/**
 * The store's index and its small chunks in one SQLite database (`node:sqlite`, built into Node):
 * every manifest, as columns with digests in binary and each signing certificate kept once, and
 * every chunk of at most PACKED_CHUNK_BYTES. Writes are queued and committed together, one
 * transaction per event-loop turn (group commit: with `fsync`, one sync covers them all); each
 * write's promise settles when its transaction has. Reads are synchronous lookups by key.
 */
export class StoreDb {
  readonly #db: DatabaseSync;
  readonly #statements: {
    putManifest: StatementSync;
    deleteManifest: StatementSync;
    putChunk: StatementSync;
    getChunk: StatementSync;
    deleteChunk: StatementSync;
    putCertificate: StatementSync;
  };
  /** Certificate ids by certificate (base64), as committed. */
  #certificates = new Map<string, number>();
  #certificateDer = new Map<number, string>();
  #queue: Write[] = [];
  #scheduled = false;
  #closed = false;

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#statements = {
      putManifest: db.prepare(
        `INSERT OR REPLACE INTO manifests (key, size, chunk_size, chunks, root, created, expires,
           content_type, certificate, signature, signed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      deleteManifest: db.prepare('DELETE FROM manifests WHERE key = ?'),
      putChunk: db.prepare('INSERT OR IGNORE INTO chunks (digest, data) VALUES (?, ?)'),
      getChunk: db.prepare('SELECT data FROM chunks WHERE digest = ?'),
      deleteChunk: db.prepare('DELETE FROM chunks WHERE digest = ?'),
      putCertificate: db.prepare('INSERT OR IGNORE INTO certificates (der) VALUES (?)'),
    };
    this.#loadCertificates();
  }

  /**
   * Opens (or creates) the database in `dir`. A file SQLite cannot read as a database is moved
   * aside to `index.db.damaged` and a new one started: the store then finds no manifests, and
   * removes the chunk files as orphans. Returns whether that happened.
   */
  static async open(dir: string, fsync: boolean): Promise<{ db: StoreDb; setAside: boolean }> {
    const path = join(dir, DB_FILE);
    try {
      return { db: StoreDb.#openAt(path, fsync), setAside: false };
    } catch (error) {
      if (!isDamaged(error)) throw storageError(error);
      await rename(path, `${path}.damaged`);
      await Promise.all(['-wal', '-shm'].map((suffix) => rm(path + suffix, { force: true })));
      return { db: StoreDb.#openAt(path, fsync), setAside: true };
    }
  }

  static #openAt(path: string, fsync: boolean): StoreDb {
    const db = new DatabaseSync(path);
    try {
      // WAL: readers never wait for the writer, and a commit appends instead of rewriting pages.
      // NORMAL syncs only at checkpoints (a crash of the process loses nothing; power loss at most
      // the last commits, never the database); FULL syncs every commit (store.fsync).
      // journal_size_limit: the WAL file is cut back to 8 MiB after a checkpoint that grew it.
      db.exec(
        // 16 KiB pages: a 4 KiB page holds three rows of a 1 KiB chunk and wastes a quarter of itself;
        // a 16 KiB one holds fifteen (the page size counts only when the file is made).
        `PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = ${fsync ? 'FULL' : 'NORMAL'};` +
          'PRAGMA journal_size_limit = 8388608;',
      );
      db.exec(SCHEMA);
      db.prepare('SELECT count(*) FROM certificates').get(); // reads a page: a damaged file fails here
      return new StoreDb(db);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /** Every manifest stored that passes parseManifest, oldest first; rows that do not are deleted. */
  *manifests(isKey: (key: string) => boolean): Generator<Manifest> {
    const bad: unknown[] = [];
    // Digests come out as hex from SQLite itself (a Buffer and a conversion each, otherwise); rows
    // as arrays (cheaper than objects, at a million rows).
    const statement = this.#db.prepare(
      `SELECT key, size, chunk_size, lower(hex(chunks)), lower(hex(root)), created, expires, content_type,
         certificate, signature, signed_by FROM manifests ORDER BY created`,
    );
    statement.setReturnArrays(true);
    for (const row of statement.iterate() as Iterable<ManifestRow>) {
      const manifest = this.#fromRow(row, isKey);
      if (manifest) yield manifest;
      else bad.push(row[0]);
    }
    for (const key of bad) {
      try {
        this.#statements.deleteManifest.run(key as string);
      } catch {
        // Left for the next start to find again.
      }
    }
  }

  /** Every chunk stored here, with its length. */
  *chunks(): Generator<{ digest: string; size: number }> {
    const statement = this.#db.prepare('SELECT lower(hex(digest)), length(data) FROM chunks');
    statement.setReturnArrays(true);
    for (const [digest, size] of statement.iterate() as Iterable<[string, number]>) yield { digest, size };
  }

  writeManifest(manifest: Manifest): Promise<void> {
    const signature = manifest.signature;
    const signatureValue = signature ? Buffer.from(signature.value, 'base64') : null;
    // A signature whose base64 is not canonical would not come back as written: kept as text.
    const keepsText = signatureValue !== null && signatureValue.toString('base64') !== signature!.value;
    return this.#enqueue(() => {
      this.#statements.putManifest.run(
        manifest.key,
        manifest.size,
        manifest.chunkSize,
        Buffer.from(manifest.chunks.join(''), 'hex'),
        Buffer.from(manifest.root, 'hex'),
        manifest.createdAtMs,
        manifest.expiresAtMs ?? null,
        manifest.contentType ?? null,
        signature ? this.#certificateId(signature.certificate) : null,
        keepsText ? signature!.value : signatureValue,
        signature?.by ?? null,
      );
    });
  }

  removeManifest(key: string): Promise<void> {
    return this.#enqueue(() => this.#statements.deleteManifest.run(key));
  }

  writeChunk(digest: string, data: Uint8Array): Promise<void> {
    return this.#enqueue(() => this.#statements.putChunk.run(Buffer.from(digest, 'hex'), data));
  }

  /** The chunk's bytes if the database holds it (unverified, as a file read is). */
  readChunk(digest: string): Buffer | undefined {
    const row = this.#statements.getChunk.get(Buffer.from(digest, 'hex')) as { data: Uint8Array } | undefined;
    return row ? Buffer.from(row.data.buffer, row.data.byteOffset, row.data.byteLength) : undefined;
  }

  /** Removes the chunk if the database holds it. */
  removeChunk(digest: string): Promise<void> {
    return this.#enqueue(() => this.#statements.deleteChunk.run(Buffer.from(digest, 'hex')));
  }

  /** Resolves when every write queued so far has committed (or failed). */
  async idle(): Promise<void> {
    await this.#enqueue(() => undefined).catch(() => undefined);
  }

  /** Commits what is queued and closes the database. */
  async close(): Promise<void> {
    await this.idle();
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }

  #enqueue(run: () => void): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('the store database is closed'));
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ run, resolve, reject });
      if (this.#scheduled) return;
      this.#scheduled = true;
      setImmediate(() => this.#commit());
    });
  }

  /** Commits up to MAX_BATCH queued writes in one transaction; a failure fails each of them. */
  #commit(): void {
    const batch = this.#queue.splice(0, MAX_BATCH);
    if (this.#queue.length > 0) setImmediate(() => this.#commit());
    else this.#scheduled = false;
    try {
      this.#db.exec('BEGIN IMMEDIATE');
      try {
        for (const write of batch) write.run();
        this.#db.exec('COMMIT');
      } catch (error) {
        if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
        throw error;
      }
    } catch (error) {
      this.#loadCertificates(); // ids taken in the rolled-back transaction are gone
      const failure = storageError(error);
      for (const write of batch) write.reject(failure);
      return;
    }
    for (const write of batch) write.resolve();
  }

  #certificateId(certificate: string): number {
    const known = this.#certificates.get(certificate);
    if (known !== undefined) return known;
    this.#statements.putCertificate.run(certificate);
    const { id } = this.#db.prepare('SELECT id FROM certificates WHERE der = ?').get(certificate) as {
      id: number;
    };
    this.#certificates.set(certificate, id);
    this.#certificateDer.set(id, certificate);
    return id;
  }

  #loadCertificates(): void {
    this.#certificates = new Map();
    this.#certificateDer = new Map();
    for (const row of this.#db.prepare('SELECT id, der FROM certificates').all() as {
      id: number;
      der: string;
    }[]) {
      this.#certificates.set(row.der, row.id);
      this.#certificateDer.set(row.id, row.der);
    }
  }

  /** The manifest a row holds, or undefined when the row does not hold together (whatever it holds). */
  #fromRow(row: ManifestRow, isKey: (key: string) => boolean): Manifest | undefined {
    const [key, size, chunkSize, hex, root, created, expires, contentType, certificateId, signature, by] =
      row;
    try {
      if (typeof hex !== 'string' || hex.length % 64 !== 0) return undefined;
      const chunks: string[] = [];
      for (let i = 0; i < hex.length; i += 64) chunks.push(hex.slice(i, i + 64));
      const certificate =
        typeof certificateId === 'number' ? this.#certificateDer.get(certificateId) : undefined;
      const value =
        signature === null
          ? undefined
          : typeof signature === 'string'
            ? signature
            : Buffer.from(signature as Uint8Array).toString('base64');
      return parseManifest(
        {
          key,
          size,
          chunkSize,
          chunks,
          root,
          createdAtMs: created,
          ...(expires === null ? {} : { expiresAtMs: expires }),
          ...(contentType === null ? {} : { contentType }),
          ...(certificateId === null && value === undefined
            ? {}
            : { signature: { certificate, value, ...(by ? { by } : {}) } }),
        },
        isKey,
      );
    } catch {
      return undefined;
    }
  }
}

/** SQLite's primary result code of a node:sqlite error, if it is one. */
function sqliteCode(error: unknown): number | undefined {
  const code = (error as { errcode?: unknown }).errcode;
  return typeof code === 'number' ? code & 0xff : undefined;
}

/** SQLITE_CORRUPT or SQLITE_NOTADB: the file is not a database SQLite can read. */
function isDamaged(error: unknown): boolean {
  const code = sqliteCode(error);
  return code === 11 || code === 26;
}

/** SQLITE_FULL becomes InsufficientStorageError, as ENOSPC does for files. */
function storageError(error: unknown): unknown {
  return sqliteCode(error) === 13
    ? new InsufficientStorageError('the disk is full', { cause: error })
    : error;
}
