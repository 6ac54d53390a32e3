import type { Clock } from '../time/clock.ts';
import { ChunkFiles } from './chunk-files.ts';
import { cutChunks } from './chunker.ts';
import { ReusedBuffers } from './reused-buffers.ts';
import { chunkLength, chunkSizeFor, digestOf, rootDigest } from './chunking.ts';
import {
  InsufficientStorageError,
  IntegrityError,
  ObjectNotFoundError,
  ObjectPurgedError,
  ObjectTooLargeError,
  StaleVersionError,
} from './errors.ts';
import { type ChunkKey, chunkKey, chunkKeyOf, chunkKeys, digestHex, keyAt } from './chunk-key.ts';
import { ChunkLedger } from './chunk-ledger.ts';
import { HotTier } from './hot-tier.ts';
import { type Manifest, type NodeSignature } from './manifest.ts';
import { ManifestFiles } from './manifest-files.ts';
import { Sieve, type SieveNode } from './sieve.ts';
import {
  DB_FILE,
  type IndexRow,
  isDamaged,
  manifestRowBytes,
  PACKED_CHUNK_BYTES,
  chunkDiskBytes,
  databaseAllowance,
  type DatabaseOptions,
  StoreDb,
} from './store-db.ts';

/** How far eviction looks for a cached copy before it takes an owned one (each look places a key). */
const CACHED_VICTIM_SCAN = 256;
/** One chunk in this many read from disk for a peer, at random, is hashed again (chunkToSend). */
export const SEND_SAMPLE = 16;
/** Buffers a PUT of several chunks cuts its body into, in turn (ReusedBuffers). */
const PUT_BUFFERS = 2;
/** Buffers a reader of an object larger than the hot tier reads its chunks into, in turn (passReader). */
const PASS_BUFFERS = 2;
/** How far a write that found the disk full looks for cached copies to evict. */
const DISK_FULL_SCAN = 4096;
/** What a write that found the disk full frees at least, before it tries once more. */
const DISK_FULL_FREE = 8 * 2 ** 20;
/** How often a manifest removal that failed is tried again (after 1, 2, 4 ... 60 s). */
const REMOVAL_RETRIES = 12;
/**
 * A scrub pauses after this many chunks or this many milliseconds of work, whichever comes first,
 * for as long again (at least 1 ms): a chunk in the database is read without leaving the event loop,
 * and the scrub is background work, so it takes at most about half of it, and a request waits at
 * most about one slice.
 */
const SCRUB_SLICE = 128;
const SCRUB_SLICE_MS = 1;
/**
 * Manifests read lately, kept parsed (#manifestOf): a hit reads its manifest from the database (a
 * point lookup and the checks, about 30 us at a million objects) only when it is not among them. At
 * most this many, and this many chunk digests in all (a 64 GiB object lists 1,024; the digests of a
 * full set take about 6 MB).
 */
const RECENT_MANIFESTS = 4096;
const RECENT_DIGESTS = 65_536;
/** Chunk rows the start's orphan pass looks at per event-loop turn. */
const ORPHAN_PAGE = 512;
/** The index loads in the background (#loadRest) in turns of at most this long. */
const LOAD_SLICE_MS = 8;

export interface ObjectStoreOptions {
  dir: string;
  /** The most bytes of chunks on disk; the store never goes above it. */
  maxBytes: number;
  /** The most bytes the in-memory hot tier keeps. */
  memoryBytes: number;
  /** The largest object accepted. */
  maxObjectBytes: number;
  /**
   * Applied to objects written here (a PUT, an origin fetch) without a TTL of their own, never to a
   * copy of another node's version (commit with its createdAtMs or signature); undefined: keep until
   * evicted.
   */
  defaultTtlMs?: number;
  fsync: boolean;
  clock: Clock;
  isKey: (key: string) => boolean;
  /** Told of every object that leaves the store, and why. */
  onRemoved?: (key: string, reason: RemovalReason) => void;
  /** When `key` was purged, if it was: versions created at or before then are refused. */
  purgedAt?: (key: string) => number | undefined;
  /** Told of every object committed (a PUT or a completed download). */
  onStored?: (manifest: Manifest) => void;
  /**
   * Signs a version this node makes (a PUT, an origin fetch): this node vouches for it to peers. A
   * copy from a peer keeps the signature it came with.
   */
  sign?: (manifest: Omit<Manifest, 'signature'>) => NodeSignature;
  /** Told of every chunk found damaged on disk. */
  onCorruptChunk?: (digest: string) => void;
  /**
   * Whether this read of a chunk for a peer is one to hash (chunkToSend); default: at random, one in
   * SEND_SAMPLE (a counter would let a fixed read pattern skip the same chunk for ever).
   */
  sampleSend?: () => boolean;
  /** Told of background file errors that have no caller to throw to. */
  onBackgroundError?: (error: unknown) => void;
  /** Whether this node keeps `key` as one of its owners: such copies are evicted last. */
  isOwned?: (key: string) => boolean;
  /** Told when a full disk made the store evict (`evicted` objects) to take a write. */
  onDiskFull?: (evicted: number) => void;
  /** Rows the background index load takes per turn; default: as many as LOAD_SLICE_MS allows (tests set it low). */
  loadRowsPerTurn?: number;
}

export type RemovalReason = 'evicted' | 'expired' | 'deleted' | 'replaced' | 'corrupt';

export interface StoreStats {
  /** What the byte limit counts: chunkBytes, indexBytes and overheadBytes. */
  bytes: number;
  /** Bytes of chunks, once per distinct chunk (a chunk file: its whole 4 KiB blocks; chunkDiskBytes). */
  chunkBytes: number;
  /** The manifests' rows in the database, estimated (manifestRowBytes). */
  indexBytes: number;
  /**
   * The rest of what the store's folder takes: what the database's files take beyond the rows and
   * packed chunks counted (its WAL, free pages, room left in pages; as measured after commits, and
   * at least the allowance set aside for it, databaseAllowance), and the folders themselves.
   */
  overheadBytes: number;
  maxBytes: number;
  entries: number;
  chunks: number;
  /** Memory the hot tier holds: its chunks and the unused room of its slabs. */
  hotBytes: number;
  /** The hot tier's bound (store.memoryBytes). */
  hotMaxBytes: number;
  /**
   * False while the index loads after a start (ObjectStore.loaded): `entries`, `chunks` and the
   * byte counts cover only what is loaded so far.
   */
  indexLoaded: boolean;
}

export interface PutOptions {
  /** The body's length when known in advance (Content-Length); enforced exactly. */
  size?: number;
  ttlMs?: number;
  contentType?: string;
  /** Called as each chunk, in order, lands on disk (readable with readChunk from then on). */
  onChunk?: (index: number, digest: string) => void;
}

/** What ObjectStore.commit publishes. */
export interface CommitFields {
  key: string;
  size: number;
  chunkSize: number;
  chunks: readonly string[];
  ttlMs?: number | undefined;
  contentType?: string | undefined;
  /** The version's creation time (a replica keeps its original's); default now. */
  createdAtMs?: number | undefined;
  /** A copy's expiry as its signer set it (instead of ttlMs). */
  expiresAtMs?: number | undefined;
  /** A copy's signature, as it came (verified by the caller); default: this node signs. */
  signature?: NodeSignature | undefined;
}

/** Where a stored chunk's bytes go in the hot tier: kept, kept cold (HotTier), or not at all. */
export type Placement = 'hot' | 'cold' | 'none';

/** Reads a run of an object's chunks once, in order: see ObjectStore.passReader. */
export interface PassReader {
  read(index: number): Promise<Buffer>;
  /** The reader is done with `bytes` (a chunk `read` gave, or a view into one): they were sent. */
  done(bytes: Uint8Array): void;
}

/** A pinned object: its chunks stay on disk until `release()`, even if it is deleted meanwhile. */
export interface ObjectHandle {
  readonly manifest: Manifest;
  release(): void;
}

/**
 * One object in the index: what eviction, the byte limit, expiry and the chunk references need, and
 * no more (a store may hold millions). The manifest stays in the database, read when the object is
 * (#manifestOf). The entry is also its own SIEVE node.
 */
interface ObjectEntry extends SieveNode<ObjectEntry> {
  readonly key: string;
  /** The chunks (chunk-key.ts): one key for a one-chunk object (most), else the list. */
  readonly chunks: ChunkKey | readonly ChunkKey[];
  /** What its manifest's row counts in the byte limit (manifestRowBytes). */
  readonly rowBytes: number;
  readonly expiresAtMs: number | undefined;
}

/** Chunks held for a write in progress (an upload or a fetch from peers) until it commits or aborts. */
export class ChunkLease {
  /**
   * The chunks it holds, by digest (hex), with the key the store made for each as it stored it: the
   * commit indexes that same string, so a chunk written here costs one key, not two.
   */
  readonly digests = new Map<string, ChunkKey>();
  /** Chunks on their way in: a second add of the same chunk waits for the first (one reference). */
  readonly adding = new Map<string, Promise<void>>();
  readonly release: () => void;
  #released = false;
  constructor(release: () => void) {
    this.release = release;
  }
  get released(): boolean {
    return this.#released;
  }
  markReleased(): void {
    this.#released = true;
  }
}

/**
 * The agent's verified content store: manifests by key and content-addressed chunks, on disk under one
 * folder with a byte limit, plus a hot tier in memory. Every chunk is hashed before it is stored and
 * every chunk read from disk is hashed again before it is returned; a damaged chunk is dropped with
 * every object that used it. After a crash, `open` rebuilds the index from the files and drops
 * anything incomplete; `scrub` re-hashes everything on disk.
 */
export class ObjectStore {
  readonly #opts: ObjectStoreOptions;
  readonly #files: ChunkFiles;
  /** Manifests and small chunks (store-db.ts); set by open. */
  #db!: StoreDb;
  readonly #hot: HotTier;
  readonly #objects = new Map<string, ObjectEntry>();
  /** Who holds each chunk (objects, leases, readers) and which are being written: chunk-ledger.ts. */
  readonly #ledger = new ChunkLedger<ChunkKey>(PACKED_CHUNK_BYTES, digestHex);
  /** Open readers per object (openRead): a pinned object is not evicted. */
  readonly #pins = new Map<ObjectEntry, number>();
  /** Manifests read lately, by key (RECENT_MANIFESTS, oldest first), and their digests' count. */
  readonly #recent = new Map<string, Manifest>();
  #recentDigests = 0;
  /** Keys whose new version's manifest is being committed (#manifestOf). */
  readonly #committing = new Set<string>();
  /** The start's pass over the database's chunks for orphans (#sweepOrphans). */
  #sweeping: Promise<void> = Promise.resolve();
  /** The index's load after open returned (#loadRest), while it runs: see #entry. */
  #loading: IndexLoad | undefined;
  #loaded: Promise<void> = Promise.resolve();
  /** The load stopped on an error: the store stays as while loading until the next start. */
  #loadFailed = false;
  /**
   * While the index loads: keys settled apart from the load (read in, written, dropped), which it
   * skips when it reaches their rows.
   */
  readonly #decided = new Set<string>();
  /** While the index loads: chunks nobody held, removed once it has loaded if nobody holds them then. */
  readonly #deferred = new Set<ChunkKey>();
  /** While the index loads: chunks found damaged, checked again once it has (a row loaded since may hold one). */
  readonly #damagedWhileLoading = new Set<ChunkKey>();

  readonly #order = new Sieve<ObjectEntry>();
  /** Chunk file removals in flight: a new write of the same digest waits for them. */
  readonly #removals = new Map<ChunkKey, Promise<void>>();
  /** Per-key chain of manifest file operations, so they land in the order they were decided. */
  readonly #manifestOps = new Map<string, Promise<void>>();
  #reserved = 0;
  /** The byte limit's count of the manifests indexed (manifestRowBytes each). */
  #indexBytes = 0;
  /** Rows dropped from the index whose removal from the database has not ended (#removeManifest). */
  #leavingRowBytes = 0;
  /**
   * What the database's files take beyond what is counted for its rows and packed chunks (#measured):
   * at least its allowance (databaseAllowance).
   */
  #dbOverhead: number;
  readonly #dbAllowance: number;
  #closed = false;
  /** #background's last report (performance.now()), and what it held back since. */
  #lastReport = -Infinity;
  #heldBack = 0;
  #heldBackTimer: NodeJS.Timeout | undefined;
  /** Timers of manifest removals to try again (#removeManifest), cleared by close(). */
  readonly #retries = new Set<NodeJS.Timeout>();

  private constructor(opts: ObjectStoreOptions) {
    this.#opts = opts;
    this.#dbAllowance = databaseAllowance(opts.maxBytes);
    this.#dbOverhead = this.#dbAllowance;
    this.#files = new ChunkFiles(opts.dir, opts.fsync);
    this.#hot = new HotTier(opts.memoryBytes);
  }

  /** Opens the store at `opts.dir`, creating it or rebuilding the index from what is there. */
  static async open(opts: ObjectStoreOptions): Promise<ObjectStore> {
    const store = new ObjectStore(opts);
    await store.#recover();
    return store;
  }

  get maxObjectBytes(): number {
    return this.#opts.maxObjectBytes;
  }

  /**
   * Whether an object of `size` bytes in chunks of `chunkSize` is too large for the hot tier: several
   * chunks, more bytes than the tier holds. They could not all stay there, and would only flush it of
   * what local readers use: a PUT of it keeps its chunks out, a download from peers sets them cold.
   */
  tooLargeForHotTier(size: number, chunkSize: number): boolean {
    return size > chunkSize && size > this.#hot.maxBytes;
  }

  stats(): StoreStats {
    return {
      bytes: this.#usedBytes(),
      chunkBytes: this.#ledger.bytes,
      indexBytes: this.#indexBytes,
      overheadBytes: this.#dbOverhead + this.#files.folderBytes,
      maxBytes: this.#opts.maxBytes,
      entries: this.#objects.size,
      chunks: this.#ledger.size,
      hotBytes: this.#hot.bytes,
      hotMaxBytes: this.#hot.maxBytes,
      indexLoaded: this.#loading === undefined,
    };
  }

  /**
   * Resolves once the index has loaded after the start (open returns before: a key not loaded yet
   * is looked up in the database when asked for). Never rejects: a load cut short by an error is
   * reported (onBackgroundError), and the store goes on as while loading until the next start.
   */
  loaded(): Promise<void> {
    return this.#loaded;
  }

  /** The live manifest for `key`, or undefined when absent or expired. Counts as a use for eviction. */
  lookup(key: string): Manifest | undefined {
    const entry = this.#entry(key);
    if (!entry) return undefined;
    const expires = entry.expiresAtMs;
    if (expires !== undefined && expires <= this.#opts.clock.now()) {
      this.#drop(key, 'expired');
      return undefined;
    }
    entry.visited = true;
    return this.#manifestOf(entry);
  }

  /** The live manifest for `key`, without counting a use (for bookkeeping passes, not reads). */
  peek(key: string): Manifest | undefined {
    const entry = this.#entry(key);
    return entry && this.#live(entry) ? this.#manifestOf(entry) : undefined;
  }

  /** Whether `key` is held and live, without reading its manifest or counting a use. */
  holds(key: string): boolean {
    const entry = this.#entry(key);
    return entry !== undefined && this.#live(entry);
  }

  /**
   * Pins `key` for reading; undefined when absent or expired. The reader holds the object's chunks
   * until it releases them, even if the object is deleted or replaced meanwhile.
   */
  openRead(key: string): ObjectHandle | undefined {
    const manifest = this.lookup(key);
    if (!manifest) return undefined;
    const entry = this.#objects.get(key);
    // The index's own keys for the manifest it holds (remembered only when they agree: #manifestOf,
    // commit); a version being committed reads as its manifest says.
    const chunks = entry && this.#recent.get(key) === manifest ? entry.chunks : chunkKeys(manifest.chunks);
    this.#ledger.take(chunks);
    if (entry) this.#pins.set(entry, (this.#pins.get(entry) ?? 0) + 1);
    let released = false;
    return {
      manifest,
      release: () => {
        if (released) return;
        released = true;
        if (entry) {
          const left = this.#pins.get(entry)! - 1;
          if (left > 0) this.#pins.set(entry, left);
          else this.#pins.delete(entry);
        }
        this.#releaseChunks(chunks);
      },
    };
  }

  /** The keys of every object in the index (a snapshot; while it loads, those loaded so far: see loaded()). */
  keys(): string[] {
    return [...this.#objects.keys()];
  }

  has(digest: string): boolean {
    const id = chunkKeyOf(digest);
    return id !== undefined && this.#ledger.has(id);
  }

  /**
   * The chunk's bytes, verified; a chunk damaged on disk is dropped and IntegrityError thrown. Bytes
   * read from disk go into the hot tier; with `into`, into its buffer when it gives one, and not into
   * the hot tier (the caller reuses that buffer).
   */
  async readChunk(digest: string, into?: (size: number) => Buffer | undefined): Promise<Buffer> {
    const hot = this.#hot.get(digest);
    if (hot) return hot;
    const id = chunkKeyOf(digest);
    if (id === undefined || !this.#ledger.has(id)) throw new ObjectNotFoundError(`chunk ${digest}`);
    const copy = this.#copyState(id);
    const data = await this.#readIntact(digest, into);
    if (data === undefined) {
      // The copy was written again (or dropped and stored anew) while this read ran: these bytes
      // may be the old copy's. Read the new one.
      if (this.#ledger.has(id) && this.#copyState(id) !== copy) return this.readChunk(digest, into);
      this.#dropCorrupt(id);
      throw new IntegrityError(digest, 'local disk');
    }
    this.#ledger.markVerified(id);
    if (!into) this.#hot.set(digest, data);
    return data;
  }

  /**
   * Reads chunks `first` to `last` of `manifest` once, in order (a response), each verified as
   * readChunk does. A pass over several chunks, more bytes than the hot tier holds, reads into
   * PASS_BUFFERS buffers in turn, each taken again once `done` is told its bytes were sent, and
   * keeps them out of the hot tier: they could not all stay there, and would only flush it (as a
   * PUT of such an object). A shorter pass reads through the hot tier, and `done` does nothing.
   */
  passReader(manifest: Manifest, first: number, last: number): PassReader {
    return this.pass(manifest.chunkSize, first, last, (index, into) =>
      this.readChunk(manifest.chunks[index]!, into),
    );
  }

  /**
   * passReader's policy over any source of chunks of `chunkSize`: `read(index, into)` reads as
   * readChunk does (a download's, waiting for each chunk to arrive). A pass over several chunks, more
   * bytes than the hot tier holds, gives `read` PASS_BUFFERS reused buffers to read into; a shorter
   * one gives none, so it reads through the tier.
   */
  pass(
    chunkSize: number,
    first: number,
    last: number,
    read: (index: number, into?: (size: number) => Buffer | undefined) => Promise<Buffer>,
  ): PassReader {
    if (!(last > first && (last - first + 1) * chunkSize > this.#hot.maxBytes))
      return { read: (index) => read(index), done: () => {} };
    const buffers = new ReusedBuffers(PASS_BUFFERS);
    const into = (size: number) => buffers.take(size);
    return { read: (index) => read(index, into), done: (bytes) => buffers.letGo(bytes) };
  }

  /**
   * The chunk's bytes for a peer, which hashes every chunk it receives: from the hot tier, else from
   * disk, hashed only when the chunk's file was not hashed in this process yet (found at start and
   * not yet scrubbed) and on one read in SEND_SAMPLE, at random, otherwise. A chunk damaged since it was hashed
   * may go out unnoticed (the receiver refuses it); the periodic scrub and the samples find it and
   * drop it. Bytes not hashed on this read stay out of the hot tier, which local clients read from.
   * Those are read into `into(size)`'s buffer when it gives one (the sender's, reused once sent).
   */
  async chunkToSend(digest: string, into?: (size: number) => Buffer | undefined): Promise<Buffer> {
    const hot = this.#hot.get(digest);
    if (hot) return hot;
    const id = chunkKeyOf(digest);
    const sample = () => this.#opts.sampleSend?.() ?? Math.random() * SEND_SAMPLE < 1;
    if (id === undefined || !this.#ledger.verified(id) || sample()) return this.readChunk(digest);
    try {
      const data = await this.#readStored(digest, into);
      // No bytes: a damaged page of the database (no chunk is empty); readChunk drops it.
      return data.length > 0 ? data : await this.readChunk(digest);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      return this.readChunk(digest); // gone meanwhile: readChunk says how
    }
  }

  /**
   * The chunk's verified bytes if the hot tier holds them (a use, for its order), without going to
   * disk; undefined otherwise (readChunk then reads and verifies it).
   */
  hotChunk(digest: string): Buffer | undefined {
    return this.#hot.get(digest);
  }

  newLease(): ChunkLease {
    const lease: ChunkLease = new ChunkLease(() => {
      if (lease.released) return;
      lease.markReleased();
      this.#releaseChunks([...lease.digests.values()]);
    });
    return lease;
  }

  /**
   * Stores a chunk under `lease`. When `expected` is given the bytes must hash to it, else
   * IntegrityError names `source`. Returns the digest. Evicts as needed to stay within the limit.
   */
  async putChunk(
    lease: ChunkLease,
    data: Buffer,
    expected?: { digest: string; source: string },
  ): Promise<string> {
    const digest = digestOf(data);
    if (expected && expected.digest !== digest) throw new IntegrityError(expected.digest, expected.source);
    await this.#addChunk(lease, digest, data);
    return digest;
  }

  /**
   * Stores a chunk the caller has already hashed to `digest` (saving a second hash on the fetch path).
   * Only for bytes verified in this process; anything else goes through putChunk. `placement` 'cold'
   * sets it cold in the hot tier (a chunk of an object tooLargeForHotTier: HotTier).
   */
  addVerifiedChunk(
    lease: ChunkLease,
    digest: string,
    data: Buffer,
    placement: Placement = 'hot',
  ): Promise<void> {
    return this.#addChunk(lease, digest, data, placement);
  }

  /** Reads `body` into chunks and commits it under `key`. Aborts cleanly on any error. */
  async put(
    key: string,
    body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    options: PutOptions = {},
  ): Promise<Manifest> {
    const limit = this.#opts.maxObjectBytes;
    if (options.size !== undefined && options.size > limit) throw new ObjectTooLargeError(limit);
    if (options.size !== undefined && options.size > this.#opts.maxBytes) {
      throw new ObjectTooLargeError(this.#opts.maxBytes, 'object is larger than the whole store');
    }
    const lease = this.newLease();
    try {
      const { chunks, size, chunkSize } = await this.#ingest(lease, body, options.size, options.onChunk);
      const { ttlMs, contentType } = options;
      return await this.commit(lease, { key, size, chunkSize, chunks, ttlMs, contentType });
    } finally {
      lease.release();
    }
  }

  async #ingest(
    lease: ChunkLease,
    body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    expectedSize: number | undefined,
    onChunk: PutOptions['onChunk'],
  ) {
    const chunkSize = chunkSizeFor(expectedSize);
    const chunks: string[] = [];
    let size = 0;
    // An object of several chunks larger than the hot tier is cut into two buffers in turn (one
    // filling while the other is written), and its chunks stay out of the hot tier: they could not
    // all stay there, and would only flush it. Smaller objects (or of unknown size) are kept there.
    const reuse = expectedSize !== undefined && this.tooLargeForHotTier(expectedSize, chunkSize);
    const buffers = reuse ? new ReusedBuffers(PUT_BUFFERS) : undefined;
    // One chunk write runs while the next chunk fills; its failure is kept and rethrown here.
    let writing: Promise<void> = Promise.resolve();
    let writeError: Error | undefined;
    try {
      const limits = {
        chunkSize,
        expectedSize,
        maxObjectBytes: this.#opts.maxObjectBytes,
        storeBytes: this.#opts.maxBytes,
      };
      for await (const data of cutChunks(body, limits, buffers)) {
        const digest = digestOf(data);
        chunks.push(digest);
        size += data.length;
        await writing;
        if (writeError) throw writeError;
        const index = chunks.length - 1;
        writing = this.#addChunk(lease, digest, data, buffers ? 'none' : 'hot').then(
          () => {
            buffers?.letGo(data); // written (or already held): the store keeps no view of it
            onChunk?.(index, digest);
          },
          (error: unknown) => {
            writeError = error instanceof Error ? error : new Error(String(error));
          },
        );
      }
    } finally {
      await writing; // never rejects; on failure the caller's lease releases what was written
    }
    if (writeError) throw writeError;
    return { chunks, size, chunkSize };
  }

  /**
   * Publishes an object whose chunks `lease` holds, replacing any earlier version of `key`. The
   * manifest is written atomically before the object becomes visible. The caller still releases the
   * lease. Returns the manifest.
   *
   * What the version is (its creation time, expiry and signature) and whether it may replace what
   * the key holds (not purged, not older) is decided in the key's turn (#manifestOp), after every
   * commit, delete and purge of the key asked for before it has landed: a version committed
   * meanwhile, or a tombstone recorded meanwhile, counts.
   */
  async commit(lease: ChunkLease, fields: CommitFields): Promise<Manifest> {
    const ids: ChunkKey[] = [];
    for (const digest of fields.chunks) {
      const id = lease.digests.get(digest);
      if (id === undefined) throw new Error(`commit: chunk ${digest} is not held by the lease`);
      // Found damaged since this write stored it (a reader of another object with the same chunk).
      if (!this.#ledger.has(id)) throw new IntegrityError(digest, 'local disk');
      ids.push(id);
    }
    const lostOf = () => fields.chunks.find((_, index) => !this.#ledger.has(ids[index]!));
    let manifest: Manifest | undefined;
    await this.#manifestOp(fields.key, async () => {
      // Again in the key's turn: a chunk found damaged (or let go by a lease) while this commit
      // waited fails it before its row replaces the version held.
      const missing = lostOf();
      if (missing !== undefined) throw new IntegrityError(missing, 'local disk');
      const current = this.#entry(fields.key);
      // What the key holds now: put back if this write is undone after its row committed.
      const previous = current && this.#manifestOf(current);
      const version = this.#version(fields, previous);
      const rowBytes = manifestRowBytes(version);
      this.#reserve(rowBytes);
      this.#committing.add(version.key);
      try {
        await this.#makingRoom(0, () => this.#db.writeManifest(version));
        const lost = lostOf();
        if (lost !== undefined) {
          await this.#undoCommit(version.key, previous);
          throw new IntegrityError(lost, 'local disk');
        }
        if (this.#objects.has(version.key)) this.#drop(version.key, 'replaced', false);
        this.#index(version.key, ids.length === 1 ? ids[0]! : ids, rowBytes, version.expiresAtMs);
        this.#remember(version);
      } finally {
        this.#committing.delete(version.key);
        this.#reserved -= rowBytes;
      }
      manifest = version;
    });
    this.#opts.onStored?.(manifest!);
    return manifest!;
  }

  /**
   * The manifest of the version `fields` commits, in the key's turn, `held` the version the key
   * holds: refused when a purge covers it or it is older than `held`.
   */
  #version(fields: CommitFields, held: Manifest | undefined): Manifest {
    const now = this.#opts.clock.now();
    // A version made here is newer than the one held, even when that one's clock ran ahead.
    const createdAtMs = fields.createdAtMs ?? Math.max(now, (held?.createdAtMs ?? -1) + 1);
    // Past 2^53 the database reads the time as damage and drops the row at the next start: the
    // write would be acknowledged, then lost. (A held version at the very top leaves no room.)
    if (!Number.isSafeInteger(createdAtMs))
      throw new StaleVersionError(
        `${fields.key}: no version can be made at ${createdAtMs}: creation times end at 2^53 - 1`,
      );
    const purgedAt = this.#opts.purgedAt?.(fields.key);
    if (purgedAt !== undefined && createdAtMs <= purgedAt) throw new ObjectPurgedError(fields.key, purgedAt);
    if (held && held.createdAtMs > createdAtMs)
      throw new StaleVersionError(
        `${fields.key}: a version made at ${createdAtMs} is older than the one held (${held.createdAtMs})`,
      );
    // The default TTL is for versions made here (a PUT, an origin fetch). A copy of another node's
    // version (its creation time or signature given) keeps the expiry its writer set, or none: its
    // signature covers the expiry, and peers would refuse a copy with another.
    const copy = fields.createdAtMs !== undefined || fields.signature !== undefined;
    const ttlMs = fields.ttlMs ?? (copy ? undefined : this.#opts.defaultTtlMs);
    const expiresAtMs = fields.expiresAtMs ?? (ttlMs === undefined ? undefined : now + ttlMs);
    const unsigned: Omit<Manifest, 'signature'> = {
      key: fields.key,
      size: fields.size,
      chunkSize: fields.chunkSize,
      chunks: [...fields.chunks],
      root: rootDigest(fields.size, fields.chunkSize, fields.chunks),
      createdAtMs,
      ...(expiresAtMs === undefined ? {} : { expiresAtMs }),
      ...(fields.contentType === undefined ? {} : { contentType: fields.contentType }),
    };
    const signature = fields.signature ?? this.#opts.sign?.(unsigned);
    return signature ? { ...unsigned, signature } : unsigned;
  }

  /**
   * A commit whose chunk went (found damaged) while its row committed is undone: the version the key
   * held is written back, its row having been overwritten. With none held, or if that write fails,
   * the row goes (retried, #removeManifest), and the version held with it.
   */
  async #undoCommit(key: string, previous: Manifest | undefined): Promise<void> {
    if (previous && this.#objects.has(key)) {
      try {
        await this.#db.writeManifest(previous);
        return;
      } catch (error) {
        this.#background(error);
      }
      this.#drop(key, 'corrupt', false);
    }
    // Queued after this commit, in the key's turn (awaiting it here would wait for itself).
    this.#removeManifest(key).catch((error) => this.#background(error));
  }

  /**
   * Removes `key`; false when it was not there. In the key's turn: a commit of the key asked for
   * before it lands first, and goes with it.
   */
  delete(key: string): Promise<boolean> {
    return this.#removeInTurn(key, () => true);
  }

  /**
   * Removes `key` if the version held was created at or before `purgedAtMs` (a purge, its tombstone
   * recorded first, so that a commit after it is refused); whether it did. In the key's turn, as
   * delete: a version whose commit was under way when the purge came lands first, and goes with it.
   */
  purge(key: string, purgedAtMs: number): Promise<boolean> {
    return this.#removeInTurn(key, (entry) => {
      if (!this.#live(entry)) {
        this.#drop(key, 'expired');
        return false;
      }
      const manifest = this.#manifestOf(entry);
      return manifest !== undefined && manifest.createdAtMs <= purgedAtMs;
    });
  }

  /**
   * Drops `key` if it is held and `covers` its entry, in the key's turn among its commits, so what a
   * commit asked for earlier writes is seen; whether it was dropped.
   */
  async #removeInTurn(key: string, covers: (entry: ObjectEntry) => boolean): Promise<boolean> {
    let removal: Promise<void> | undefined;
    await this.#manifestOp(key, () => {
      const entry = this.#entry(key);
      if (entry && covers(entry)) {
        this.#drop(key, 'deleted', false);
        // Its row's removal, next in the key's turn (awaiting it here would wait for itself).
        removal = this.#removeManifest(key, entry.rowBytes);
      }
      return Promise.resolve();
    });
    if (!removal) return false;
    // The manifest's removal is this call's: a failure to remove it is the caller's to hear (and
    // it is tried again, or the object would come back at the next start).
    await removal;
    return true;
  }

  /** Drops every expired object; returns how many. */
  sweepExpired(): number {
    const now = this.#opts.clock.now();
    let n = 0;
    for (const [key, { expiresAtMs }] of this.#objects) {
      if (expiresAtMs !== undefined && expiresAtMs <= now) {
        this.#drop(key, 'expired');
        n++;
      }
    }
    return n;
  }

  /** Re-hashes every chunk on disk, dropping damaged ones with their objects. */
  async scrub(): Promise<{ checked: number; corrupt: number }> {
    await this.#loaded; // every chunk known
    let checked = 0;
    let corrupt = 0;
    let slice = performance.now();
    // The ledger's digests walked live: one stored meanwhile goes to the end, so the walk stops after
    // as many as there were at its start (under steady writes it would never end otherwise).
    let left = this.#ledger.size;
    for (const id of this.#ledger.digests()) {
      if (left-- <= 0) break;
      if (this.#closed) break; // the agent is stopping
      if (!this.#ledger.has(id)) continue;
      if (!(await this.#verifyOnDisk(id))) corrupt++;
      checked++;
      // A chunk in the database is read without leaving the event loop: let it take its turns.
      const worked = performance.now() - slice;
      if (checked % SCRUB_SLICE === 0 || worked > SCRUB_SLICE_MS) {
        // At most 10 ms: `worked` counts the wait for a file chunk's read too.
        await new Promise((resolve) => setTimeout(resolve, Math.min(10, Math.max(1, Math.round(worked)))));
        slice = performance.now();
      }
    }
    return { checked, corrupt };
  }

  /**
   * Hashes the chunk's file (not its copy in the hot tier, which stays as it is): whether it is
   * intact; a damaged one is dropped as readChunk drops it.
   */
  async #verifyOnDisk(id: ChunkKey): Promise<boolean> {
    const copy = this.#copyState(id);
    if ((await this.#readIntact(digestHex(id))) === undefined) {
      if (!this.#ledger.has(id)) return true; // removed meanwhile: nothing to check
      if (this.#copyState(id) !== copy) return this.#verifyOnDisk(id); // as readChunk
      this.#dropCorrupt(id);
      return false;
    }
    this.#ledger.markVerified(id);
    return true;
  }

  /** Waits for background file operations to finish. */
  async flush(): Promise<void> {
    await this.#loaded;
    await this.#sweeping;
    // Again while there is more: the measure after a commit may evict (#measured).
    do {
      await Promise.all([...this.#manifestOps.values(), ...this.#removals.values()]);
      await this.#db.idle();
    } while (this.#manifestOps.size > 0 || this.#removals.size > 0);
  }

  /** Finishes background work and closes the database; the store is not to be used after. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const timer of this.#retries) clearTimeout(timer);
    this.#retries.clear();
    clearTimeout(this.#heldBackTimer);
    await this.flush();
    await this.#db.close();
  }

  /** The chunk's bytes as stored (unverified): in the database when small, else in its file. */
  #readStored(digest: string, into?: (size: number) => Buffer | undefined): Promise<Buffer> {
    const packed = this.#db.readChunk(digest);
    return packed ? Promise.resolve(packed) : this.#files.read(digest, into);
  }

  /**
   * The chunk's stored bytes if they are there and hash to its digest; undefined when they are gone
   * or damaged (what to do then is the caller's: nothing is dropped here).
   */
  async #readIntact(
    digest: string,
    into?: (size: number) => Buffer | undefined,
  ): Promise<Buffer | undefined> {
    let data: Buffer;
    try {
      data = await this.#readStored(digest, into);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      return undefined;
    }
    return digestOf(data) === digest ? data : undefined;
  }

  /**
   * What a read compares before it calls a copy damaged: whether the copy was verified, and how
   * many chunks were dropped so far. Either changes when the copy is written again, or dropped and
   * stored anew, while the read runs (drops are rare: a global count is enough).
   */
  #copyState(id: ChunkKey): number {
    return this.#ledger.drops * 2 + (this.#ledger.verified(id) ? 1 : 0);
  }

  #writeStored(digest: string, data: Buffer): Promise<void> {
    return data.length <= PACKED_CHUNK_BYTES
      ? this.#db.writeChunk(digest, data)
      : this.#files.write(digest, data);
  }

  /** Stores the chunk, and keeps `data` in the hot tier as `placement` says ('none': the caller reuses it). */
  #addChunk(lease: ChunkLease, digest: string, data: Buffer, placement: Placement = 'hot'): Promise<void> {
    if (lease.digests.has(digest)) return Promise.resolve();
    // Repeated content (an object of zeros) adds one chunk several times at once: the lease takes
    // one reference for it, which its release gives back.
    const pending = lease.adding.get(digest);
    if (pending) return pending;
    const adding = this.#storeChunk(lease, digest, data, placement).finally(() =>
      lease.adding.delete(digest),
    );
    lease.adding.set(digest, adding);
    return adding;
  }

  async #storeChunk(lease: ChunkLease, digest: string, data: Buffer, placement: Placement): Promise<void> {
    const id = chunkKey(digest);
    if (!this.#ledger.has(id)) {
      await this.#removals.get(id);
      const bytes = chunkDiskBytes(data.length);
      this.#reserve(bytes);
      this.#ledger.startWrite(id);
      try {
        await this.#makingRoom(bytes, () => this.#writeStored(digest, data));
        this.#ledger.stored(id, bytes, true);
      } finally {
        this.#reserved -= bytes;
        this.#ledger.endWrite(id);
      }
    } else if (!this.#ledger.verified(id)) {
      // Found on disk at start and not hashed since (a small chunk is not even looked up at start):
      // its copy is checked, and written again from these verified bytes if it is gone or damaged
      // (which heals the objects that share it).
      this.#ledger.startWrite(id);
      try {
        if ((await this.#readIntact(digest)) === undefined)
          await this.#makingRoom(data.length, () => this.#writeStored(digest, data));
        this.#ledger.markVerified(id);
      } finally {
        this.#ledger.endWrite(id);
      }
    }
    if (lease.released) {
      // Released while the chunk was written (an aborted download, a delete): no reference is
      // taken, and a chunk nobody else holds goes again.
      if (this.#ledger.abandon(id)) this.#removeChunk(id);
      return;
    }
    // Found damaged and dropped while this write waited: stored afresh.
    if (!this.#ledger.has(id)) return this.#storeChunk(lease, digest, data, placement);
    this.#ledger.take(id);
    lease.digests.set(digest, id);
    if (placement !== 'none') this.#hot.set(digest, data, placement === 'cold');
  }

  /**
   * Runs `write`; when the disk is full below the store's own limit (another tenant filled it), the
   * store shrinks instead of refusing: it evicts cached copies (unpinned, not owned) holding at
   * least DISK_FULL_FREE (or 4 x `bytes`, if more), waits for their files to go, and runs `write`
   * once more. Nothing evictable: the disk-full error stands (507).
   */
  async #makingRoom(bytes: number, write: () => Promise<void>): Promise<void> {
    try {
      return await write();
    } catch (error) {
      if (!(error instanceof InsufficientStorageError)) throw error;
      // No chunk is removed after a failed load (#loadRest): evicting would free nothing.
      if (this.#loadFailed) throw error;
      const target = this.#ledger.bytes - Math.max(DISK_FULL_FREE, 4 * bytes);
      let evicted = 0;
      const isOwned = this.#opts.isOwned;
      // Only cached copies: an owned one is one of the mesh's R copies, and once the disk has room
      // again nothing would bring it back.
      const cached = (entry: ObjectEntry) => !this.#pins.has(entry) && !isOwned?.(entry.key);
      while (this.#ledger.bytes > target) {
        // Bounded: each look places a key; past DISK_FULL_SCAN entries the write gives up (507).
        const victim = this.#order.evict(cached, DISK_FULL_SCAN);
        if (victim === undefined) break;
        this.#drop(victim.key, 'evicted');
        evicted++;
      }
      if (evicted === 0) throw error;
      this.#opts.onDiskFull?.(evicted);
      // While the index loads, chunks let go are removed only once it has (#removeChunk).
      if (this.#loading) await this.#loaded;
      await Promise.all(this.#removals.values());
      // Rows deleted free pages inside the database's file: give them back to the file system.
      await this.#db.idle();
      this.#db.reclaim();
      return await write();
    }
  }

  /**
   * The next object to evict (SIEVE order, never a pinned one): a copy this node keeps as a cache
   * before one it keeps as an owner (isOwned), which is one of the mesh's R copies of the key, if a
   * cached one is among the next CACHED_VICTIM_SCAN entries the hand would look at.
   */
  #victim(): string | undefined {
    const unpinned = (entry: ObjectEntry) => !this.#pins.has(entry);
    const isOwned = this.#opts.isOwned;
    const cached = isOwned
      ? this.#order.find((entry) => unpinned(entry) && !isOwned(entry.key), CACHED_VICTIM_SCAN)
      : undefined;
    if (cached === undefined) return this.#order.evict(unpinned)?.key;
    this.#order.delete(cached);
    return cached.key;
  }

  /**
   * What the byte limit counts: chunks (files in whole blocks, packed ones by their length), the
   * manifests' rows, what the database's files take beyond those (#dbOverhead) and the folders.
   */
  #usedBytes(): number {
    return this.#ledger.bytes + this.#indexBytes + this.#dbOverhead + this.#files.folderBytes;
  }

  /**
   * The database measured its files (after commits): what they take beyond the rows and packed
   * chunks counted (the WAL, free pages, room left in pages) is counted too, at least the allowance.
   * Measured `idle` (no write waits, so the counts match the file) and above the limit: the store
   * evicts. Not while the index loads: its counts cover only what is loaded, so the figure
   * would count the rest twice (measured again once it has loaded).
   */
  #measured(diskBytes: number, idle: boolean): void {
    if (this.#loading !== undefined || this.#db === undefined || this.#closed) return;
    const counted = this.#indexBytes + this.#leavingRowBytes + this.#ledger.smallBytes;
    this.#dbOverhead = Math.max(this.#dbAllowance, diskBytes - counted);
    if (!idle || this.#usedBytes() + this.#reserved <= this.#opts.maxBytes) return;
    try {
      this.#reserve(0);
    } catch {
      // Nothing evictable now: the next write makes room, or is refused (507).
    }
  }

  /** Makes room for `bytes` more by evicting unpinned objects; throws when it cannot. */
  #reserve(bytes: number): void {
    const max = this.#opts.maxBytes;
    while (this.#usedBytes() + this.#reserved + bytes > max) {
      const victim = this.#victim();
      if (victim === undefined) {
        throw new InsufficientStorageError(
          `no room for ${bytes} bytes: ${this.#usedBytes()} of ${max} in use and nothing evictable`,
        );
      }
      this.#drop(victim, 'evicted');
    }
    this.#reserved += bytes;
  }

  #index(
    key: string,
    chunks: ChunkKey | readonly ChunkKey[],
    rowBytes: number,
    expiresAtMs: number | undefined,
    loaded = false,
  ): void {
    // Always the same fields in the same order: one shape for every entry.
    const entry: ObjectEntry = {
      key,
      chunks,
      rowBytes,
      expiresAtMs,
      visited: false,
      prev: undefined,
      next: undefined,
    };
    this.#objects.set(key, entry);
    this.#indexBytes += rowBytes;
    // Loaded at a start: older than every object written or looked up since it (the load runs
    // newest first), and its references already counted (#admit).
    if (loaded) this.#order.append(entry);
    else {
      this.#order.insert(entry);
      this.#ledger.take(chunks);
    }
  }

  /**
   * `key`'s entry in the index. While the index loads, a key it has not reached yet is looked up in
   * the database and indexed now (or found gone); either way the load skips it after (#decided).
   */
  #entry(key: string): ObjectEntry | undefined {
    const entry = this.#objects.get(key);
    const load = this.#loading;
    if (entry !== undefined || load === undefined || this.#closed || this.#decided.has(key)) return entry;
    const row = this.#db.indexRow(key, this.#opts.isKey);
    // No row: nothing for the load to skip (a row removed since it began was marked by whoever
    // removed it). Not remembered, so lookups of keys the store never had (any client can send
    // them) cost a point read each, not memory.
    if (row === undefined) return undefined;
    this.#decided.add(key);
    if (row === 'bad') {
      this.#db.removeManifest(key).catch((error) => this.#background(error));
      return undefined;
    }
    return this.#admit(row, load.files) ? this.#objects.get(key) : undefined;
  }

  /**
   * A row of the start's pass over the database, or of a key asked for before the pass reached it:
   * indexed, its chunks counted; or, when it is expired, purged or lacks a chunk file, its row
   * removed. Returns whether it was indexed.
   */
  #admit(row: IndexRow, files: Map<ChunkKey, number>): boolean {
    const live = row.expiresAtMs === undefined || row.expiresAtMs > this.#opts.clock.now();
    // Purged while its removal could not be written (a full disk): not brought back.
    const purged = (this.#opts.purgedAt?.(row.key) ?? -Infinity) >= row.createdAtMs;
    if (!live || purged || !this.#chunksIntact(row, files)) {
      this.#decided.add(row.key);
      // In the database's queue before any later write of the key: what fails is found again at
      // the next start.
      this.#db.removeManifest(row.key).catch((error) => this.#background(error));
      return false;
    }
    if (typeof row.chunks === 'string') this.#ledger.storedAndTaken(row.chunks, chunkDiskBytes(row.size));
    else {
      for (let index = 0; index < row.chunks.length; index++) {
        const length = chunkLength(row.size, row.chunkSize, index);
        this.#ledger.stored(row.chunks[index]!, chunkDiskBytes(length), false);
      }
      this.#ledger.take(row.chunks);
    }
    this.#index(row.key, row.chunks, row.rowBytes, row.expiresAtMs, true);
    return true;
  }

  #live(entry: ObjectEntry): boolean {
    return entry.expiresAtMs === undefined || entry.expiresAtMs > this.#opts.clock.now();
  }

  /**
   * The object's manifest: among those read lately, else read from the database and checked whole.
   * A row that is gone, does not hold together, or names other chunks than the index does is
   * damage (a page, an edit): the object is dropped, as one with a damaged chunk is.
   */
  #manifestOf(entry: ObjectEntry): Manifest | undefined {
    const recent = this.#recent.get(entry.key);
    if (recent) return recent;
    const manifest = this.#db.readManifest(entry.key, this.#opts.isKey);
    if (manifest && sameChunks(manifest.chunks, entry.chunks) && manifest.expiresAtMs === entry.expiresAtMs) {
      this.#remember(manifest);
      return manifest;
    }
    // A new version committed a moment ago, indexed once its commit's turn ends: it is the object
    // now (its chunks are held by its writer until then).
    if (manifest && this.#committing.has(entry.key)) return manifest;
    this.#background(new Error(`${entry.key}: its manifest in the store's database is damaged; dropped`));
    this.#drop(entry.key, 'corrupt');
    return undefined;
  }

  #remember(manifest: Manifest): void {
    this.#forgetRecent(manifest.key);
    this.#recent.set(manifest.key, manifest);
    this.#recentDigests += manifest.chunks.length;
    for (const [oldest, { chunks }] of this.#recent) {
      if (this.#recent.size <= RECENT_MANIFESTS && this.#recentDigests <= RECENT_DIGESTS) break;
      this.#recent.delete(oldest);
      this.#recentDigests -= chunks.length;
    }
  }

  /** Out of the manifests read lately (dropped or replaced). */
  #forgetRecent(key: string): void {
    const known = this.#recent.get(key);
    if (!known) return;
    this.#recent.delete(key);
    this.#recentDigests -= known.chunks.length;
  }

  /** Takes `key` out of the index now; its row and chunk references follow (readers keep theirs). */
  #drop(key: string, reason: RemovalReason, removeFile = true): void {
    const entry = this.#objects.get(key);
    if (!entry) return;
    this.#objects.delete(key);
    if (this.#loading) this.#decided.add(key); // the load must not bring its row back
    this.#forgetRecent(key);
    this.#indexBytes -= entry.rowBytes;
    this.#order.delete(entry);
    this.#releaseChunks(entry.chunks);
    if (removeFile) this.#removeManifest(key, entry.rowBytes).catch((error) => this.#background(error));
    this.#opts.onRemoved?.(key, reason);
  }

  /**
   * Removes `key`'s manifest from the database, in its turn among the key's operations, unless a
   * newer version was indexed first. A removal that failed (the database busy or full) is tried
   * again, REMOVAL_RETRIES times with backoff, so a deleted object does not come back at a restart.
   */
  #removeManifest(key: string, rowBytes = 0, attempt = 0): Promise<void> {
    // Out of #indexBytes already, in the database until the delete commits (#measured).
    this.#leavingRowBytes += rowBytes;
    const op = this.#manifestOp(key, async () => {
      if (!this.#objects.has(key)) await this.#db.removeManifest(key);
    }).finally(() => {
      this.#leavingRowBytes -= rowBytes;
    });
    op.catch(() => {
      if (this.#closed || attempt >= REMOVAL_RETRIES) return;
      const timer = setTimeout(
        () => {
          this.#retries.delete(timer);
          this.#removeManifest(key, rowBytes, attempt + 1).catch((error) => this.#background(error));
        },
        Math.min(1000 * 2 ** attempt, 60_000),
      ).unref();
      this.#retries.add(timer);
    });
    return op;
  }

  /**
   * Tells onBackgroundError, at most once a second: a full or broken disk fails every removal at
   * once (thousands, after an eviction), and one line says as much as all of them. The next report
   * says how many were held back.
   */
  #background(error: unknown): void {
    const now = performance.now();
    // A damaged database is said every time: it is rare, and it is what an operator must see.
    if (now - this.#lastReport < 1000 && !isDamaged(error)) {
      this.#heldBack++;
      // Said once the second is over, even if nothing else goes wrong after.
      this.#heldBackTimer ??= setTimeout(() => {
        this.#heldBackTimer = undefined;
        this.#sayHeldBack();
      }, 1000).unref();
      return;
    }
    this.#lastReport = now;
    this.#sayHeldBack();
    this.#opts.onBackgroundError?.(error);
  }

  #sayHeldBack(): void {
    if (this.#heldBack === 0) return;
    this.#opts.onBackgroundError?.(
      new Error(`${this.#heldBack} more background store errors, not reported one by one`),
    );
    this.#heldBack = 0;
    this.#lastReport = performance.now();
  }

  #releaseChunks(chunks: ChunkKey | readonly ChunkKey[]): void {
    for (const id of this.#ledger.release(chunks)) this.#removeChunk(id);
  }

  /** Not held, not being written, not being removed already: nothing will ever read it. */
  #unheld(id: ChunkKey): boolean {
    return !this.#ledger.has(id) && !this.#ledger.writing(id) && !this.#removals.has(id);
  }

  /** A chunk the ledger forgot: out of the hot tier, and its file removed in the background. */
  #removeChunk(id: ChunkKey): void {
    const digest = digestHex(id);
    this.#hot.delete(digest);
    if (this.#loading) {
      // A row not loaded yet may hold it too (its references are not counted yet).
      this.#deferred.add(id);
      return;
    }
    // Both places, whatever the size: a small chunk may be a file a store before the database
    // wrote, and on a full disk the database's delete may fail where the file's does not.
    // The row leaves smallBytes as its delete commits, before the measure that follows the commit
    // (#measured): had it waited for the file's unlink too, that measure would count the row as
    // still there, and the store would count what its database takes short by it until the next.
    const row = this.#db.removeChunk(digest).finally(() => this.#ledger.removed(id));
    const removal = Promise.allSettled([row, this.#files.remove(digest)])
      .then((results) => {
        for (const result of results) if (result.status === 'rejected') this.#background(result.reason);
      })
      .finally(() => {
        if (this.#removals.get(id) === removal) this.#removals.delete(id);
      });
    this.#removals.set(id, removal);
  }

  #dropCorrupt(id: ChunkKey): void {
    this.#opts.onCorruptChunk?.(digestHex(id));
    if (this.#loading) this.#damagedWhileLoading.add(id);
    for (const [key, { chunks }] of this.#objects) {
      if (chunks === id || (typeof chunks !== 'string' && chunks.includes(id))) this.#drop(key, 'corrupt');
    }
    // Leases or pinned readers may still reference it: the bytes are bad, so forget them anyway.
    if (this.#ledger.drop(id)) this.#removeChunk(id);
  }

  #manifestOp(key: string, op: () => Promise<void>): Promise<void> {
    // Runs after the previous operation whether it succeeded or not; each failure goes to its own caller.
    const previous = this.#manifestOps.get(key) ?? Promise.resolve();
    const next = previous.then(op, op);
    // The chain's own link never rejects: the failure is `next`'s, which its caller handles. (A
    // link that rejected with nobody awaiting it was an unhandled rejection: a dead agent.)
    const tracked: Promise<void> = next
      .catch(() => undefined)
      .finally(() => {
        if (this.#manifestOps.get(key) === tracked) this.#manifestOps.delete(key);
      });
    this.#manifestOps.set(key, tracked);
    return next;
  }

  async #recover(): Promise<void> {
    await this.#files.init(); // also empties tmp/
    const { db, setAside } = await StoreDb.open(this.#opts.dir, this.#opts.fsync, this.#dbOptions());
    this.#db = db;
    if (setAside) this.#saySetAside();
    try {
      await this.#startLoad();
    } catch (error) {
      if (!isDamaged(error)) throw error;
      // A damaged page further into the file: the same as a file SQLite cannot read at all.
      await db.close().catch(() => undefined);
      await StoreDb.setAside(this.#opts.dir);
      await new ManifestFiles(this.#opts.dir).restoreImported(); // read into that file: read again
      this.#db = (await StoreDb.open(this.#opts.dir, this.#opts.fsync, this.#dbOptions())).db;
      this.#saySetAside();
      await this.#startLoad();
    }
    // Every manifest file read in is in the database's rows, read (sorted) by the first row.
    await new ManifestFiles(this.#opts.dir).removeImported();
    this.#loaded = this.#loadRest(this.#loading!);
  }

  #dbOptions(): DatabaseOptions {
    return { allowanceBytes: this.#dbAllowance, onMeasured: (bytes, idle) => this.#measured(bytes, idle) };
  }

  #saySetAside(): void {
    this.#background(
      new Error(`the store's database could not be read: moved to ${DB_FILE}.damaged, starting empty`),
    );
  }

  /**
   * Starts building the index from the database and the chunk files (#recover): the chunk files are
   * listed, and the first row of one pass over the manifests' rows read, which sorts them all (a
   * damaged page throws here, before the store opens). The rest loads in the background (#loadRest),
   * keeping what the index needs (IndexRow), not the manifests. A chunk kept as a file must be there
   * at its length; one kept in the database is checked when read, and by the scrub.
   */
  async #startLoad(): Promise<void> {
    await this.#importManifestFiles();
    this.#db.pruneCertificates();
    const files = new Map<ChunkKey, number>();
    // The scan names only files named as digests (isDigest): no second check.
    for await (const { digest, size } of this.#files.scan()) files.set(keyAt(digest, 0), size);
    // A bad row (IndexRow's checks) is removed once the pass is over, unless written since.
    const rows = this.#db.index(
      this.#opts.isKey,
      (key) => !this.#objects.has(key) && !this.#decided.has(key),
    );
    const first = rows.next();
    this.#loading = { rows, first, files, found: [...files.keys()] };
  }

  /**
   * Loads the index's rows, newest first, LOAD_SLICE_MS of work per event-loop turn, while the store
   * serves: a key asked for meanwhile is read on its own (#entry), and chunks let go meanwhile are
   * kept until every row has been counted (#removeChunk). Then #finishLoad.
   */
  async #loadRest(load: IndexLoad): Promise<void> {
    const perTurn = this.#opts.loadRowsPerTurn;
    let next = load.first;
    try {
      // A small store loads whole before open returns.
      for (;;) {
        const started = performance.now();
        for (let n = 1; !next.done; n++) {
          const row = next.value;
          if (!this.#objects.has(row.key) && !this.#decided.has(row.key)) this.#admit(row, load.files);
          next = load.rows.next();
          if (
            perTurn === undefined ? n % 64 === 0 && performance.now() - started > LOAD_SLICE_MS : n >= perTurn
          )
            break;
        }
        if (next.done) break;
        await new Promise(setImmediate);
        if (this.#closed) {
          // Closes its connection. #loading stays: a chunk let go now (a reader done at shutdown)
          // may be held by a row not loaded, and #entry reads no more once closed.
          load.rows.return(undefined);
          return;
        }
      }
    } catch (error) {
      // The store goes on as while loading (#loading stays): a key not loaded is read from the
      // database when asked for, and no chunk let go is removed, until the next start.
      this.#loadFailed = true;
      load.rows.return(undefined);
      const reason = error instanceof Error ? error.message : String(error);
      this.#background(
        new Error(
          `the store's index stopped loading (${reason}): until the next start, objects not loaded are read from the database when asked for, and no chunk is removed`,
        ),
      );
      return;
    }
    await this.#finishLoad(load);
  }

  /**
   * The index has loaded: chunks nobody holds now are removed (files found at start that no row
   * holds, chunks let go while it loaded), the store evicts down to its limit (lowered while the
   * agent was down), the orphan pass over the database's chunks starts, and chunks found damaged
   * while it loaded are checked again if a row loaded since holds them (before loaded() resolves).
   */
  async #finishLoad(load: IndexLoad): Promise<void> {
    this.#loading = undefined;
    this.#decided.clear();
    const deferred = [...this.#deferred];
    const damaged = [...this.#damagedWhileLoading];
    this.#deferred.clear();
    this.#damagedWhileLoading.clear();
    if (this.#closed) return;
    const ledger = this.#ledger;
    for (const id of [...load.found, ...deferred]) if (this.#unheld(id)) this.#removeChunk(id);
    // Not measured while it loaded (#measured); its reader kept what was written meanwhile in the WAL.
    this.#db.checkpoint();
    if (this.#usedBytes() > this.#opts.maxBytes) {
      try {
        this.#reserve(0);
      } catch (error) {
        this.#background(error); // everything pinned: the next write evicts
      }
    }
    // Never rejects: what it cannot do is said, and the next start tries again.
    this.#sweeping = this.#sweepOrphans().catch((error: unknown) => this.#background(error));
    for (const id of damaged) {
      if (!ledger.has(id) || ledger.verified(id)) continue; // gone, or stored again since
      await this.#verifyOnDisk(id).catch((error: unknown) => this.#background(error));
    }
  }

  /**
   * After the start, in the background: chunk rows no object holds (a write cut short before its
   * manifest committed) are removed, ORPHAN_PAGE rows per turn.
   */
  async #sweepOrphans(): Promise<void> {
    let after = 0;
    while (!this.#closed) {
      let page: { digests: string[]; damaged: number[]; last: number };
      try {
        page = this.#db.chunkPage(after, ORPHAN_PAGE);
      } catch (error) {
        this.#background(error); // the next start tries again
        return;
      }
      if (page.last === after) return;
      after = page.last;
      if (page.damaged.length > 0) {
        this.#background(
          new Error(
            `${page.damaged.length} chunk rows in the store's database name no chunk (damaged): removing them`,
          ),
        );
        for (const rowid of page.damaged)
          this.#db.removeChunkRow(rowid).catch((error: unknown) => this.#background(error));
      }
      for (const digest of page.digests) {
        const id = keyAt(digest, 0); // lower-case hex of 32 bytes (chunkPage): no second check
        if (this.#unheld(id)) this.#removeChunk(id);
      }
      await new Promise(setImmediate);
    }
  }

  /** Manifest files of a store written before the database (`manifests/`): moved into it, once. */
  async #importManifestFiles(): Promise<void> {
    const legacy = new ManifestFiles(this.#opts.dir);
    if (!(await legacy.exists())) return;
    // The files are the truth: a store that went back a release and forward again left rows here
    // of objects deleted meanwhile (manifests/ goes only once every file is in).
    await this.#db.clearManifests();
    const writes: Promise<void>[] = [];
    let scanError: unknown;
    try {
      for await (const manifest of legacy.scan(this.#opts.isKey))
        writes.push(this.#db.writeManifest(manifest));
    } catch (error) {
      scanError = error;
    }
    // Every write is awaited, whatever happened (none is left to reject unhandled).
    const failed = (await Promise.allSettled(writes)).find((r) => r.status === 'rejected');
    if (scanError !== undefined) throw scanError as Error;
    if (failed?.status === 'rejected') throw failed.reason as Error;
    await legacy.markImported(); // removed once the store has opened (#recover)
  }

  /**
   * Whether every chunk of the row kept as a file is there at its length. A small chunk with no file
   * is in the database (a store before it kept small chunks as files too): not looked up here (at a
   * million objects that lookup alone took seconds), but hashed when read and by the scrub, which
   * drop the object if it is gone or damaged.
   */
  #chunksIntact(row: IndexRow, files: Map<ChunkKey, number>): boolean {
    let intact = true;
    const count = typeof row.chunks === 'string' ? 1 : row.chunks.length;
    for (let index = 0; index < count; index++) {
      const id = typeof row.chunks === 'string' ? row.chunks : row.chunks[index]!;
      const length = chunkLength(row.size, row.chunkSize, index);
      const size = files.get(id);
      if (size === length || (size === undefined && length <= PACKED_CHUNK_BYTES)) continue;
      intact = false;
      if (size !== undefined) {
        files.delete(id); // wrong length: damaged, and removed as an orphan
        this.#opts.onCorruptChunk?.(digestHex(id));
      }
    }
    return intact;
  }
}

/** The index's load after the start (#startLoad, #loadRest). */
interface IndexLoad {
  rows: Generator<IndexRow>;
  /** The first row, read before the store opens. */
  first: IteratorResult<IndexRow>;
  /** The chunk files found at start: their sizes (#chunksIntact takes out those of the wrong length). */
  files: Map<ChunkKey, number>;
  /** Their chunks as found. */
  found: ChunkKey[];
}

/** Whether a manifest's chunk list (hex) is the one the index holds (one key, or the list). */
function sameChunks(chunks: readonly string[], held: ChunkKey | readonly ChunkKey[]): boolean {
  if (typeof held === 'string') return chunks.length === 1 && chunkKey(chunks[0]!) === held;
  return chunks.length === held.length && chunks.every((digest, index) => chunkKey(digest) === held[index]);
}
