import { existsSync, rmSync, type Stats, statSync, writeFileSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { InsufficientStorageError } from './errors.ts';
import { chunkCount, MAX_CHUNK_SIZE } from './chunking.ts';
import { type ChunkKey, keyAt } from './chunk-key.ts';
import { type Manifest, parseManifest } from './manifest.ts';

/**
 * Chunks of at most this many bytes are kept in the database, not in files of their own: a file
 * takes at least one 4 KiB block and an inode, so a 1 KiB object in files (a chunk and a manifest)
 * took 8 KiB on disk. Larger chunks stay files, read and written off the event loop. A page holds
 * whole rows only, so a chunk of more than half a page (8.5 KB, say) has one to itself: objects of
 * 8.5 KB take 1.96 times their bytes (as files of three 4 KiB blocks they would take 1.45); the
 * byte limit counts what they take (databaseAllowance).
 */
export const PACKED_CHUNK_BYTES = 16 * 1024;
/** The file system's block: a chunk file takes its length rounded up to whole blocks. */
const FILE_BLOCK_BYTES = 4096;

/**
 * What a chunk of `length` bytes takes on disk, as the store's byte limit counts it: its bytes in
 * the database (a packed chunk: its row's share is in manifestRowBytes), or its file's whole blocks.
 */
export function chunkDiskBytes(length: number): number {
  return length <= PACKED_CHUNK_BYTES ? length : Math.ceil(length / FILE_BLOCK_BYTES) * FILE_BLOCK_BYTES;
}
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
    (manifest.signature ? 72 + Buffer.byteLength(manifest.signature.by ?? '') : 0) +
    Buffer.byteLength(manifest.contentType ?? '')
  );
}

/** Beside the database: damage was met while running, and the next start checks the whole file. */
const CHECK_SUFFIX = '.check';
/** The database's file under the store's folder (SQLite adds `-wal` and `-shm` beside it). */
export const DB_FILE = 'index.db';
/** The most writes, and about the most bytes, committed in one transaction (it blocks the event loop). */
const MAX_BATCH = 256;
const MAX_BATCH_BYTES = 2 ** 20;
/** What a delete counts for MAX_BATCH_BYTES: the page it rewrites (so a batch holds at most 64). */
const DELETE_BYTES = 16 * 1024;
/** The schema's version (`PRAGMA user_version`); a database of another is set aside. */
const SCHEMA_VERSION = 1;
/** The database's page (set when the file is made; a file made with another keeps its own). */
const PAGE_BYTES = 16 * 1024;
/** The least and the most of the database's allowance (databaseAllowance). */
const MIN_ALLOWANCE_BYTES = 2 ** 20;
const MAX_ALLOWANCE_BYTES = 16 * 2 ** 20;
/**
 * The fewest WAL pages between checkpoints: a checkpoint syncs, and one every few commits halved a
 * small store's writes.
 */
const MIN_CHECKPOINT_PAGES = 32;
/** The most free pages one commit that deleted gives back (it moves pages, through the WAL). */
const MAX_VACUUM_PAGES = 1024;

/**
 * What the store's byte limit sets aside for the database's files beyond what it counts for rows
 * and packed chunks (manifestRowBytes, their lengths): the WAL, the WAL's shared-memory index (32
 * KiB), free pages, and the room rows leave unused in their pages. A 64th of the limit in whole
 * pages, at least 1 MiB (an empty database takes 176 KiB) and at most 16 MiB (a 10 GiB store:
 * 0.16%). The database keeps the WAL and the free pages within it, a quarter each (and the WAL at
 * least 32 pages); what its files take beyond the counts and the allowance is counted as measured
 * (StoreDb.measure, ObjectStore's overheadBytes).
 */
export function databaseAllowance(maxBytes: number): number {
  const share = Math.floor(maxBytes / 64 / PAGE_BYTES) * PAGE_BYTES;
  return Math.min(MAX_ALLOWANCE_BYTES, Math.max(MIN_ALLOWANCE_BYTES, share));
}
/** The largest integer a row may hold where a number is read (a larger one makes node:sqlite throw). */
const SAFE = 'BETWEEN -9007199254740991 AND 9007199254740991';

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

/** What the store tells the database when it opens it. */
export interface DatabaseOptions {
  /** databaseAllowance of the store's limit: what the WAL and the free pages are kept within. */
  allowanceBytes: number;
  /** Called with diskBytes each time it is measured (after commits); `idle`: no write waits. */
  onMeasured?: (diskBytes: number, idle: boolean) => void;
}

interface DatabaseLimits {
  pageBytes: number;
  vacuumPages: number;
  onMeasured: ((diskBytes: number, idle: boolean) => void) | undefined;
}

interface Write {
  run(): void;
  /** Bytes it writes (for MAX_BATCH_BYTES). */
  bytes: number;
  /** A delete: a commit that ran one may give free pages back. */
  deletes: boolean;
  resolve(): void;
  reject(error: unknown): void;
}

/**
 * A manifest's columns as readManifest reads them, digests as lower-case hex. A number past 2^53 (a
 * damaged or edited file; node:sqlite would throw) reads as NULL or 'bad', and the row is dropped.
 */
const SIZE = `CASE WHEN size ${SAFE} THEN size END`;
const CHUNK_SIZE = `CASE WHEN chunk_size ${SAFE} THEN chunk_size END`;
const CREATED = `CASE WHEN created ${SAFE} THEN created END`;
const EXPIRES = `CASE WHEN expires ${SAFE} THEN expires WHEN expires IS NULL THEN NULL ELSE 'bad' END`;
const MANIFEST_COLUMNS = `key, ${SIZE}, ${CHUNK_SIZE}, lower(hex(chunks)), lower(hex(root)), ${CREATED}, ${EXPIRES}, content_type,
  CASE WHEN certificate ${SAFE} THEN certificate WHEN certificate IS NULL THEN NULL ELSE 'bad' END,
  CASE WHEN typeof(signature) IN ('blob', 'text', 'null') THEN signature ELSE 'bad' END, signed_by`;

/**
 * manifestRowBytes of a row, computed by SQLite (a start reads it for every manifest without
 * building one). Equal to manifestRowBytes of the manifest the row holds: both count bytes of UTF-8
 * (a NUL or an emoji counts as in JavaScript), and a row has a signature when it has a certificate or
 * a signature value.
 */
const ROW_BYTES = `160 + length(CAST(key AS BLOB)) + length(chunks) + 32
  + CASE WHEN certificate IS NULL AND signature IS NULL THEN 0
      ELSE 72 + coalesce(length(CAST(signed_by AS BLOB)), 0) END
  + coalesce(length(CAST(content_type AS BLOB)), 0)`;

/** What index() reads of a manifest: what the store's in-memory index keeps, and the row's checks. */
export interface IndexRow {
  key: string;
  /** The chunks' keys (chunk-key.ts): one (most objects), or the list. */
  chunks: ChunkKey | ChunkKey[];
  size: number;
  chunkSize: number;
  createdAtMs: number;
  expiresAtMs: number | undefined;
  rowBytes: number;
}

/**
 * The columns index() and indexRow() read: digests come out as hex from SQLite itself. A number past
 * 2^53 (a damaged or edited file) reads as NULL: the row is dropped.
 */
const INDEX_COLUMNS = `key, lower(hex(chunks)), ${SIZE}, ${CHUNK_SIZE}, ${CREATED}, ${EXPIRES}, ${ROW_BYTES}`;
type IndexColumns = [unknown, unknown, unknown, unknown, unknown, unknown, number];

/** An index row from its columns; undefined when one the index relies on is malformed. */
function toIndexRow(
  [key, hex, size, chunkSize, created, expires, rowBytes]: IndexColumns,
  isKey: (key: string) => boolean,
): IndexRow | undefined {
  if (
    typeof key !== 'string' ||
    !isKey(key) ||
    typeof hex !== 'string' ||
    !Number.isSafeInteger(size) ||
    (size as number) < 0 ||
    !Number.isSafeInteger(chunkSize) ||
    (chunkSize as number) <= 0 ||
    (chunkSize as number) > MAX_CHUNK_SIZE ||
    hex.length !== 64 * chunkCount(size as number, chunkSize as number) ||
    !Number.isSafeInteger(created) ||
    (expires !== null && !Number.isSafeInteger(expires))
  )
    return undefined;
  return {
    key,
    chunks: hex.length === 64 ? keyAt(hex, 0) : splitKeys(hex),
    size: size as number,
    chunkSize: chunkSize as number,
    createdAtMs: created as number,
    expiresAtMs: (expires as number | null) ?? undefined,
    rowBytes,
  };
}

/**
 * A manifest as readManifest reads it, in MANIFEST_COLUMNS' order (digests as lower-case hex). Typed as
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
  readonly #path: string;
  readonly #statements: {
    putManifest: StatementSync;
    deleteManifest: StatementSync;
    putChunk: StatementSync;
    getChunk: StatementSync;
    deleteChunk: StatementSync;
    putCertificate: StatementSync;
    getManifest: StatementSync;
    getIndexRow: StatementSync;
    chunkPage: StatementSync;
    deleteChunkRow: StatementSync;
    pageCount: StatementSync;
    freePages: StatementSync;
  };
  /** Certificate ids by certificate (base64), as committed. */
  #certificates = new Map<string, number>();
  /** Ids the open transaction gave new certificates: known only once it commits. */
  readonly #newCertificates = new Map<string, number>();
  #certificateDer = new Map<number, string>();
  #queue: Write[] = [];
  #scheduled = false;
  /** close() was called: no more writes are taken. */
  #closing = false;
  #closed = false;
  /** The file's page size (PRAGMA page_size). */
  readonly #pageBytes: number;
  /** Free pages past which a commit that deleted rows gives pages back to the file system. */
  readonly #vacuumPages: number;
  /** measure()'s last figure: what the database's files take. */
  #diskBytes = 0;
  /** A measure is scheduled (#afterCommit). */
  #measuring = false;
  readonly #onMeasured: ((diskBytes: number, idle: boolean) => void) | undefined;

  private constructor(db: DatabaseSync, path: string, limits: DatabaseLimits) {
    this.#db = db;
    this.#path = path;
    this.#pageBytes = limits.pageBytes;
    this.#vacuumPages = limits.vacuumPages;
    this.#onMeasured = limits.onMeasured;
    this.#statements = {
      putManifest: db.prepare(
        `INSERT OR REPLACE INTO manifests (key, size, chunk_size, chunks, root, created, expires,
           content_type, certificate, signature, signed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      deleteManifest: db.prepare('DELETE FROM manifests WHERE key = ?'),
      // REPLACE: a row left behind by a failed delete (damaged, say) never outlives a new write.
      putChunk: db.prepare('INSERT OR REPLACE INTO chunks (digest, data) VALUES (?, ?)'),
      getChunk: db.prepare('SELECT data FROM chunks WHERE digest = ?'),
      deleteChunk: db.prepare('DELETE FROM chunks WHERE digest = ?'),
      putCertificate: db.prepare('INSERT OR IGNORE INTO certificates (der) VALUES (?)'),
      getManifest: db.prepare(`SELECT ${MANIFEST_COLUMNS} FROM manifests WHERE key = ?`),
      getIndexRow: db.prepare(`SELECT ${INDEX_COLUMNS} FROM manifests WHERE key = ?`),
      chunkPage: db.prepare(
        "SELECT rowid, lower(hex(digest)), typeof(digest) = 'blob' FROM chunks WHERE rowid > ? ORDER BY rowid LIMIT ?",
      ),
      deleteChunkRow: db.prepare('DELETE FROM chunks WHERE rowid = ?'),
      pageCount: db.prepare('PRAGMA page_count'),
      freePages: db.prepare('PRAGMA freelist_count'),
    };
    // Rows as arrays: node:sqlite makes each row object in V8's old space (74 bytes a row, measured),
    // so a scrub's million chunk reads left 70 MB of garbage there, and the heap's peak in RSS after.
    this.#statements.getChunk.setReturnArrays(true);
    this.#statements.getManifest.setReturnArrays(true);
    this.#statements.getIndexRow.setReturnArrays(true);
    this.#statements.chunkPage.setReturnArrays(true);
    this.#statements.pageCount.setReturnArrays(true);
    this.#statements.freePages.setReturnArrays(true);
    this.#loadCertificates();
  }

  /**
   * Measures what the database's files take (its pages, free ones included, the WAL and its shared
   * memory) and tells onMeasured, with `idle` when no write waits (so what the store counts for its
   * rows and chunks matches what the files hold). Done after commits, once their writes have been
   * taken in (#afterCommit).
   */
  measure(): void {
    try {
      // The larger of the length and the blocks allocated (whole 4 KiB blocks, sometimes one more):
      // the main file's length is its pages' (a vacuum cuts it at the next checkpoint).
      const taken = (stats: Stats | undefined, length = stats?.size ?? 0) =>
        Math.max(length, (stats?.blocks ?? 0) * 512);
      const file = (suffix: string) => statSync(this.#path + suffix, { throwIfNoEntry: false });
      this.#diskBytes =
        taken(file(''), this.#number(this.#statements.pageCount) * this.#pageBytes) +
        taken(file('-wal')) +
        taken(file('-shm'));
    } catch {
      // Unreadable now (a damaged header, a file system error, closed): the last figure stands.
    }
    this.#onMeasured?.(this.#diskBytes, this.#queue.length === 0 && !this.#scheduled);
  }

  /**
   * Opens (or creates) the database in `dir`. A file SQLite cannot read as this store's database
   * (damaged, or of another schema version) is moved aside to `index.db.damaged` and a new one
   * started: the store then finds no manifests, and removes the chunk files as orphans.
   */
  static async open(
    dir: string,
    fsync: boolean,
    options: DatabaseOptions,
  ): Promise<{ db: StoreDb; setAside: boolean }> {
    const path = join(dir, DB_FILE);
    try {
      return { db: StoreDb.#openAt(path, fsync, options), setAside: false };
    } catch (error) {
      if (!isDamaged(error)) throw openError(path, error);
      await StoreDb.setAside(dir);
      try {
        return { db: StoreDb.#openAt(path, fsync, options), setAside: true };
      } catch (again) {
        throw openError(path, again);
      }
    }
  }

  /** Moves the database's files aside (`index.db.damaged`), for a new one to be started. */
  static async setAside(dir: string): Promise<void> {
    const path = join(dir, DB_FILE);
    await rename(path, `${path}.damaged`).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
    await Promise.all(['-wal', '-shm', CHECK_SUFFIX].map((suffix) => rm(path + suffix, { force: true })));
  }

  static #openAt(path: string, fsync: boolean, options: DatabaseOptions): StoreDb {
    const db = new DatabaseSync(path);
    try {
      // Set before the first table, so they count only when the file is made:
      // - 16 KiB pages: a 4 KiB page holds three rows of a 1 KiB chunk and wastes a quarter of
      //   itself; a 16 KiB one holds fifteen;
      // - incremental auto-vacuum: pages freed by deletes can be given back to the file system
      //   (#vacuum), so evicting small objects frees disk, not only room in the file.
      db.exec(`PRAGMA page_size = ${PAGE_BYTES}; PRAGMA auto_vacuum = INCREMENTAL;`);
      const { page_size: pageBytes } = db.prepare('PRAGMA page_size').get() as { page_size: number };
      // A quarter of the allowance (databaseAllowance) each for the WAL and the free pages: 256
      // pages (4 MiB) in a large store.
      const quarterPages = Math.max(1, Math.floor(options.allowanceBytes / 4 / pageBytes));
      const checkpointPages = Math.max(MIN_CHECKPOINT_PAGES, quarterPages);
      // WAL: readers never wait for the writer, and a commit appends instead of rewriting pages.
      // NORMAL syncs only at checkpoints (a crash of the process loses nothing; power loss at most
      // the last commits, never the database); FULL syncs every commit (store.fsync). A checkpoint
      // once the WAL holds that quarter, and the WAL file cut back to it after one that grew it.
      db.exec(
        `PRAGMA journal_mode = WAL; PRAGMA synchronous = ${fsync ? 'FULL' : 'NORMAL'};` +
          `PRAGMA wal_autocheckpoint = ${checkpointPages}; PRAGMA journal_size_limit = ${checkpointPages * pageBytes};`,
      );
      const { user_version: version } = db.prepare('PRAGMA user_version').get() as { user_version: number };
      const fresh = version === 0;
      if (!fresh && version !== SCHEMA_VERSION) {
        throw Object.assign(new Error(`schema version ${version}, not ${SCHEMA_VERSION}`), { errcode: 26 });
      }
      if (existsSync(path + CHECK_SUFFIX)) {
        // Damage was met while running (#markDamaged): the whole file is checked once.
        const { quick_check: result } = db.prepare('PRAGMA quick_check(1)').get() as { quick_check: string };
        if (result !== 'ok') throw Object.assign(new Error(`quick_check: ${result}`), { errcode: 11 });
        rmSync(path + CHECK_SUFFIX, { force: true });
      }
      db.exec(SCHEMA);
      if (fresh) db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      return new StoreDb(db, path, { pageBytes, vacuumPages: quarterPages, onMeasured: options.onMeasured });
    } catch (error) {
      db.close();
      // A schema that is not this one (a table without a column this code reads) is damage too.
      throw sqliteCode(error) === 1 ? Object.assign(error as Error, { errcode: 26 }) : error;
    }
  }

  /**
   * What the store's index keeps of every manifest, newest first, without building the manifest:
   * its key, chunks, size, chunk size, creation, expiry and manifestRowBytes (computed by SQLite).
   * Only what the index relies on is checked here (the key, numbers, the chunk list's length); a row
   * that fails is deleted once the pass is over, if `mayRemove` says its key was not written since.
   * The rest (the root, the signature, the media type) is checked when the manifest is first read
   * (readManifest), so a start does not build a million manifests.
   *
   * The rows come from a read-only connection of their own: one snapshot of the table, taken by the
   * first row (which sorts them all, so a damaged page throws there), however long the caller takes
   * between rows while writes go on through this connection. Ending the iteration early closes it.
   */
  *index(isKey: (key: string) => boolean, mayRemove: (key: string) => boolean): Generator<IndexRow> {
    const bad: unknown[] = [];
    const reader = new DatabaseSync(this.#path, { readOnly: true });
    try {
      // Rows as arrays: cheaper than objects, at a million rows.
      const statement = reader.prepare(`SELECT ${INDEX_COLUMNS} FROM manifests ORDER BY created DESC`);
      statement.setReturnArrays(true);
      for (const columns of statement.iterate() as Iterable<IndexColumns>) {
        const row = toIndexRow(columns, isKey);
        if (row) yield row;
        else bad.push(columns[0]);
      }
    } catch (error) {
      if (isDamaged(error)) this.#markDamaged(); // the next start checks the whole file
      throw error;
    } finally {
      reader.close();
    }
    for (const key of bad) {
      if (typeof key === 'string' && !mayRemove(key)) continue;
      try {
        this.#statements.deleteManifest.run(key as string);
      } catch {
        // Left for the next start to find again.
      }
    }
  }

  /**
   * What index() reads of `key`'s row, from this connection (what is committed now): 'bad' when a
   * column the index relies on is malformed, undefined when there is no row. A damaged page reads as
   * no row, and the next start checks the file.
   */
  indexRow(key: string, isKey: (key: string) => boolean): IndexRow | 'bad' | undefined {
    const columns = this.#rowOf<IndexColumns>(this.#statements.getIndexRow, key);
    return columns && (toIndexRow(columns, isKey) ?? 'bad');
  }

  /**
   * `key`'s manifest, checked whole (parseManifest); undefined when there is no row, or the row does
   * not hold together (the caller drops the object: the row goes with it). A damaged page reads as
   * no row, and the next start checks the file.
   */
  readManifest(key: string, isKey: (key: string) => boolean): Manifest | undefined {
    const row = this.#rowOf<ManifestRow>(this.#statements.getManifest, key);
    return row && this.#fromRow(row, isKey);
  }

  /** `statement`'s row for `key` (as arrays); undefined when none, or on a damaged page (marked). */
  #rowOf<Row>(statement: StatementSync, key: string): Row | undefined {
    try {
      return statement.get(key) as Row | undefined;
    } catch (error) {
      if (!isDamaged(error)) throw error;
      this.#markDamaged();
      return undefined;
    }
  }

  /** Forgets every manifest (before the manifest files of a store that went back a release are read again). */
  clearManifests(): Promise<void> {
    return this.#enqueue(() => this.#db.exec('DELETE FROM manifests'), 0, true);
  }

  /**
   * Forgets certificates no manifest uses any more (a node's certificate is renewed; each kept
   * certificate is about 800 bytes, read at every start). Only when there are more than a few.
   */
  pruneCertificates(): void {
    if (this.#certificates.size <= 16) return;
    try {
      this.#db.exec(
        `DELETE FROM certificates WHERE id NOT IN
           (SELECT DISTINCT certificate FROM manifests WHERE certificate IS NOT NULL)`,
      );
      this.#loadCertificates();
    } catch (error) {
      if (isDamaged(error)) throw error;
      // Best effort (a full disk, say): tried again at the next start.
    }
  }

  /**
   * Copies the WAL into the main file and empties it, then measures: after the index's load, whose
   * open reader kept every commit made meanwhile in the WAL (no checkpoint could pass it).
   */
  checkpoint(): void {
    try {
      this.#db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    } catch {
      // Best effort: measured as it is.
    }
    this.measure();
  }

  /**
   * Gives the file system back what deletes freed: the WAL emptied, free pages cut off the end of
   * the file. For a full disk; best effort (on a disk with no byte left, the WAL may not take it).
   */
  reclaim(): void {
    try {
      this.#db.exec('PRAGMA wal_checkpoint(TRUNCATE); PRAGMA incremental_vacuum;');
      this.#db.exec('PRAGMA wal_checkpoint(TRUNCATE);');
    } catch {
      // Nothing more to give back now.
    }
    this.measure();
  }

  /**
   * Up to `limit` chunk rows after rowid `after` (0: from the start), in the order rows were made:
   * the digests (lower-case hex) of those that hold one, the rowids of those that do not (not a
   * 32-byte blob: a damaged page, an edit; the file is marked for a check at the next start), and
   * the last rowid read, for a pass that pages through them.
   */
  chunkPage(after: number, limit: number): { digests: string[]; damaged: number[]; last: number } {
    const rows = this.#statements.chunkPage.all(after, limit) as unknown as [number, string, number][];
    const digests: string[] = [];
    const damaged: number[] = [];
    for (const [rowid, hex, isBlob] of rows) {
      if (isBlob === 1 && hex.length === 64) digests.push(hex);
      else damaged.push(rowid);
    }
    if (damaged.length > 0) this.#markDamaged();
    return { digests, damaged, last: rows.at(-1)?.[0] ?? after };
  }

  /** Removes the chunk row `rowid` (one chunkPage found naming no chunk). */
  removeChunkRow(rowid: number): Promise<void> {
    return this.#enqueue(() => this.#statements.deleteChunkRow.run(rowid), DELETE_BYTES, true);
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
    }, manifestRowBytes(manifest));
  }

  removeManifest(key: string): Promise<void> {
    return this.#enqueue(() => this.#statements.deleteManifest.run(key), DELETE_BYTES, true);
  }

  writeChunk(digest: string, data: Uint8Array): Promise<void> {
    return this.#enqueue(() => this.#statements.putChunk.run(Buffer.from(digest, 'hex'), data), data.length);
  }

  /**
   * The chunk's bytes if the database holds it (unverified, as a file read is). A damaged page, or
   * a row that holds no bytes, reads as no bytes at all: the caller's hash check then finds the
   * chunk damaged and drops it.
   */
  readChunk(digest: string): Buffer | undefined {
    let row: [data: unknown] | undefined;
    try {
      row = this.#statements.getChunk.get(Buffer.from(digest, 'hex')) as unknown as [unknown] | undefined;
    } catch (error) {
      if (!isDamaged(error)) throw error;
      this.#markDamaged();
      return Buffer.alloc(0);
    }
    if (!row) return undefined;
    const [data] = row;
    if (!(data instanceof Uint8Array)) {
      this.#markDamaged();
      return Buffer.alloc(0);
    }
    return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }

  /** Removes the chunk if the database holds it. */
  removeChunk(digest: string): Promise<void> {
    return this.#enqueue(
      () => this.#statements.deleteChunk.run(Buffer.from(digest, 'hex')),
      DELETE_BYTES,
      true,
    );
  }

  /** Resolves when every write queued so far has committed (or failed), and been measured. */
  async idle(): Promise<void> {
    while (this.#queue.length > 0 || this.#scheduled || this.#measuring) await new Promise(setImmediate);
  }

  /** Takes no more writes, commits what is queued, and closes the database. */
  async close(): Promise<void> {
    this.#closing = true;
    await this.idle();
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }

  #enqueue(run: () => void, bytes = 0, deletes = false): Promise<void> {
    if (this.#closing) return Promise.reject(new Error('the store database is closed'));
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ run, bytes, deletes, resolve, reject });
      if (this.#scheduled) return;
      this.#scheduled = true;
      setImmediate(() => this.#commit());
    });
  }

  /**
   * Commits queued writes in one transaction, up to MAX_BATCH of them or about MAX_BATCH_BYTES; a
   * failure fails each of them.
   */
  #commit(): void {
    let n = 0;
    for (let bytes = 0; n < this.#queue.length && n < MAX_BATCH && bytes < MAX_BATCH_BYTES; n++)
      bytes += this.#queue[n]!.bytes;
    const batch = this.#queue.splice(0, n);
    if (this.#queue.length > 0) setImmediate(() => this.#commit());
    else this.#scheduled = false;
    if (this.#closed) {
      for (const write of batch) write.reject(new Error('the store database is closed'));
      return;
    }
    try {
      try {
        this.#transaction(batch);
      } catch (error) {
        if (sqliteCode(error) !== 13) throw error;
        // A full disk: the WAL could not grow. Checkpointed, it is written from its start again,
        // in the room it already has: try once more.
        this.#db.exec('PRAGMA wal_checkpoint(RESTART)');
        this.#transaction(batch);
      }
    } catch (error) {
      if (isDamaged(error)) this.#markDamaged();
      const failure = storageError(error);
      for (const write of batch) write.reject(failure);
      return;
    }
    for (const write of batch) write.resolve();
    if (batch.some((write) => write.deletes)) this.#vacuum();
    this.#afterCommit();
  }

  /**
   * Measures once the callers of a commit's writes have taken them in (their continuations run
   * before the next turn of the event loop), once for commits in a row.
   */
  #afterCommit(): void {
    if (this.#measuring || this.#onMeasured === undefined) return;
    this.#measuring = true;
    setImmediate(() => {
      this.#measuring = false;
      if (!this.#closed) this.measure();
    });
  }

  #transaction(batch: readonly Write[]): void {
    this.#newCertificates.clear();
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      for (const write of batch) write.run();
      this.#db.exec('COMMIT');
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      this.#newCertificates.clear(); // rolled back with the rest: a retry inserts them again
      throw error;
    }
    for (const [certificate, id] of this.#newCertificates) {
      this.#certificates.set(certificate, id);
      this.#certificateDer.set(id, certificate);
    }
    this.#newCertificates.clear();
  }

  /** After deletes: past #vacuumPages free pages, all but half of those go back (MAX_VACUUM_PAGES at most). */
  #vacuum(): void {
    try {
      const free = this.#number(this.#statements.freePages);
      const surplus = Math.min(MAX_VACUUM_PAGES, free - Math.floor(this.#vacuumPages / 2));
      if (free > this.#vacuumPages) this.#db.exec(`PRAGMA incremental_vacuum(${surplus})`);
    } catch {
      // Left for the next commit that deletes.
    }
  }

  /** What a statement that reads one number (page_count, freelist_count) reads. */
  #number(statement: StatementSync): number {
    return (statement.get() as unknown as [number])[0];
  }

  /**
   * A damaged page was met while running: the next start checks the whole file (quick_check) and
   * sets it aside if it fails, since a start reads only the tables' pages, not every index page.
   */
  #markDamaged(): void {
    try {
      writeFileSync(this.#path + CHECK_SUFFIX, '');
    } catch {
      // The check is a precaution; the damaged reads are dropped as damaged chunks meanwhile.
    }
  }

  #certificateId(certificate: string): number {
    const known = this.#certificates.get(certificate) ?? this.#newCertificates.get(certificate);
    if (known !== undefined) return known;
    this.#statements.putCertificate.run(certificate);
    const { id } = this.#db.prepare('SELECT id FROM certificates WHERE der = ?').get(certificate) as {
      id: number;
    };
    this.#newCertificates.set(certificate, id);
    return id;
  }

  #loadCertificates(): void {
    this.#certificates = new Map();
    this.#certificateDer = new Map();
    const rows = this.#db.prepare(`SELECT id, der FROM certificates WHERE id ${SAFE}`).all();
    for (const row of rows as {
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
      const chunks = splitDigests(hex);
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

/** The keys of the digests in `hex` (SQLite's lower(hex()) of a chunk list). */
function splitKeys(hex: string): ChunkKey[] {
  const keys: ChunkKey[] = [];
  for (let i = 0; i < hex.length; i += 64) keys.push(keyAt(hex, i));
  return keys;
}

/** Digests written one after the other in hex, one by one. */
function splitDigests(hex: string): string[] {
  const digests: string[] = [];
  for (let i = 0; i < hex.length; i += 64) digests.push(hex.slice(i, i + 64));
  return digests;
}

/** SQLite's primary result code of a node:sqlite error, if it is one. */
function sqliteCode(error: unknown): number | undefined {
  const code = (error as { errcode?: unknown }).errcode;
  return typeof code === 'number' ? code & 0xff : undefined;
}

/**
 * SQLITE_CORRUPT or SQLITE_NOTADB: the file is not a database SQLite can read (or not this store's:
 * open marks another schema so).
 */
export function isDamaged(error: unknown): boolean {
  const code = sqliteCode(error);
  return code === 11 || code === 26;
}

/** SQLITE_FULL becomes InsufficientStorageError, as ENOSPC does for files. */
function storageError(error: unknown): unknown {
  return sqliteCode(error) === 13
    ? new InsufficientStorageError('the disk is full', { cause: error })
    : error;
}

/** An error opening the database, saying which file (SQLite's own message does not). */
function openError(path: string, error: unknown): unknown {
  const full = storageError(error);
  if (full !== error) return full;
  return new Error(`the store database ${path} cannot be opened: ${(error as Error).message}`, {
    cause: error,
  });
}
