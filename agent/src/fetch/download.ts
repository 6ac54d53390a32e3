import { IntegrityError } from '../cache/errors.ts';
import { chunkLength, digestOf, isDigest, rootDigest } from '../cache/chunking.ts';
import { type Manifest, parseManifest } from '../cache/manifest.ts';
import type { ChunkLease, ObjectStore } from '../cache/object-store.ts';
import { ReusedBuffers } from '../cache/reused-buffers.ts';
import { HOP_CLASSES, type Holder, type HopClass, type ObjectHead } from '../domain.ts';
import { isKey } from '../keys.ts';
import type { PeerOutcome } from '../overlay/reputation.ts';
import { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import { context, SpanKind, trace, tracer } from '../telemetry/tracing.ts';
import {
  NOT_FOUND,
  PeerBusyError,
  PeerError,
  PeerRefusedError,
  type PeerTransport,
  type ReceiveBuffers,
} from '../transport/peer-transport.ts';
import type { ChunkSource } from './chunk-source.ts';
import { IMPORT_WAIT_MS, MAX_IN_FLIGHT, planChunks } from './chunk-plan.ts';
import { Progress, type Swarm } from './swarm.ts';

/** No holder could deliver the object; `failures` says what each one did. */
export class PeerFetchError extends Error {
  override name = 'PeerFetchError';
  readonly key: string;
  readonly failures: readonly string[];
  /** How many of `failures` were a peer answering that it holds the chunk no more (NOT_FOUND). */
  readonly #missing: number;
  constructor(key: string, failures: readonly string[], missing = 0) {
    super(`could not fetch ${key} from any peer: ${failures.join('; ') || 'no holder'}`);
    this.key = key;
    this.failures = failures;
    this.#missing = missing;
  }

  /**
   * Whether no peer failed, only let go of it: none was left to ask, or each answered that it holds
   * it no more (NOT_FOUND). The object was evicted everywhere: a miss, not a fault.
   */
  get gone(): boolean {
    return this.failures.length === this.#missing;
  }
}

export interface Located {
  /** The object's shape. */
  head: ObjectHead;
  /** Its manifest, unless an owner is still getting it from the origin (then ask `authority`). */
  manifest?: Manifest;
  /** Peers that hold this version whole, cheapest first. */
  holders: PeerTransport[];
  /**
   * The owner getting the object from its origin, when `manifest` is not known yet: its Watch gives
   * the chunk digests as they come and, at the end, the manifest.
   */
  authority?: PeerTransport;
}

/** What a download needs from the agent. */
export interface DownloadOptions {
  store: ObjectStore;
  /** A connection to a holder an owner named, if it is a member this node trusts; else undefined. */
  resolve?: (holder: Holder) => PeerTransport | undefined;
  /** How far a peer is (for locality when choosing whom to ask for each chunk); default 'remote'. */
  hopClassOf?: (peer: PeerTransport) => HopClass;
  /** Where a peer is (zone, region), for traces. */
  placeOf?: (peer: PeerTransport) => { zone: string; region: string };
  /** Called after each chunk batch a peer delivered whole: its hop class and how long it took. */
  onBatch?: (hop: HopClass, seconds: number) => void;
  /** Where downloads under way are published, so peers can fetch their chunks early. */
  swarm?: Swarm;
  /** This node as a holder, named to the peers it watches so they can fetch from it in turn. */
  self?: () => Holder | undefined;
  counters: Counters;
  logger: Logger;
  /**
   * A peer call's timeout; a download with no chunk for three times this fails, and a holder with
   * none for this long (at least) is a straggler whose chunks others may be asked for.
   */
  timeoutMs: number;
  /**
   * Checks that a node of the mesh vouches for a peer's manifest (its signature); throws when none
   * does. A manifest that fails is never used: nothing is fetched, stored or served by it.
   */
  verify?: (manifest: Manifest) => void;
  /** Hears what each peer did, as this node verified it (reputation). */
  onOutcome?: (peer: PeerTransport, outcome: PeerOutcome) => void;
  /**
   * The slowest origin a download following an owner's origin fetch waits for (default
   * ORIGIN_MIN_BYTES_PER_S): with no new chunk from the owner for a chunk's time at that rate (and at
   * least three call timeouts), the download fails.
   */
  originMinBytesPerSecond?: number;
  /**
   * Receive buffers of an object too large for the hot tier, at most (default: as many chunks as its
   * write-behind, the recent chunks and RECEIVE_SPARE_BYTES hold).
   */
  receiveBuffers?: number;
}

/**
 * An owner getting an object from its origin announces each chunk as it comes; at this rate or
 * slower the follower gives up on it (64 MiB chunks: 17 minutes; 4 MiB: about a minute). An owner
 * that keeps its Watch open and announces nothing would otherwise hold the download (and a download
 * slot) for ever.
 */
export const ORIGIN_MIN_BYTES_PER_S = 64 * 1024;

/** Verified chunk bytes held in memory while their disk writes are under way, per download. */
const WRITE_BEHIND_BYTES = 64 * 1024 * 1024;
/**
 * Receive buffers a download of an object too large for the hot tier makes, in bytes, beyond those
 * its write-behind and recent chunks hold: chunks being received, and those local readers are
 * sending (at least two buffers).
 */
const RECEIVE_SPARE_BYTES = 32 * 1024 * 1024;
/**
 * Written chunks downloads keep in memory for readers just behind them (Download.#recent), all the
 * node's downloads together (what the hot tier's cold part held for them before): past it, the
 * oldest of them go, whichever download's.
 */
const RECENT_BYTES = 64 * 1024 * 1024;
/** A chunk kept so (in a receive buffer), and how its download lets go of it. */
interface RecentChunk {
  data: Buffer;
  forget(): void;
}
/** Every download's recent chunks, oldest first, and their bytes. */
const recentOnNode = new Set<RecentChunk>();
let recentBytesOnNode = 0;

/** The bytes of written chunks downloads keep for their readers now (tests: none once they close). */
export function recentBytes(): number {
  return recentBytesOnNode;
}
/** Swarm members (partial holders) watched at a time, per download. */
const MAX_WATCHED = 10;

/** A peer this download may get chunks from. */
interface Source {
  transport: PeerTransport;
  /** Its node id. */
  id: string;
  /** What it has: everything, or chunk by chunk (as its Watch says). */
  has: Uint8Array | 'all';
  /** Hop class index (same zone 1, same region 2, elsewhere 3) and rank among holders. */
  cls: number;
  rank: number;
  inFlight: number;
  dead: boolean;
  /** It answered that it holds the chunk no more (NOT_FOUND): dead, and the object gone from it. */
  gone: boolean;
  /** Refused as busy, or failed lately: not asked again before this time (performance.now()). */
  busyUntil: number;
  /** Its requests that failed (not counting busy refusals): at SOURCE_ATTEMPTS it is dead. */
  failures: number;
  /** When it last delivered a chunk, or was asked while it had nothing under way (performance.now()). */
  progressAt: number;
  /** Its time per chunk (ms between its deliveries, smoothed); undefined before its first chunk. */
  pace: number | undefined;
  /**
   * Its last call failed, was refused as busy or was overtaken, and it delivered nothing since: its
   * pace may be stale (see #bestOtherPace's `lenient`).
   */
  setback: boolean;
  /** A straggler now (see STRAGGLER_FACTOR): asked nothing new, its chunks may be asked of others. */
  straggling: boolean;
  /** How many chunks more than it owes it would deliver within half the straggler limit (#reachOf). */
  reach: number | undefined;
}

/** One FetchChunks call under way. */
interface Ask {
  source: Source;
  indexes: number[];
  /** How many of `indexes` arrived (they come in order). */
  delivered: number;
  /** Ends this call alone (the download's own abort ends every call). */
  abort: AbortController;
  /** Its chunks all came from others (it was a straggler's): it ends, and that is no failure. */
  overtaken: boolean;
  /** It asks for chunks another holder was asked for already (it overtakes a straggler). */
  second: boolean;
  /** It overtook a straggler and then straggled itself: it ends (see `penalized`). */
  stalled: boolean;
  /** Its end as stalled counts as a failure of its holder (one per holder each time it is judged). */
  penalized: boolean;
  /** When it was asked (performance.now()). */
  started: number;
}

/**
 * A holder with requests under way is a straggler when it delivered no chunk for longer than the
 * limit, or when its pace is more than this many times the best other holder's and what it still
 * owes would take it longer than the limit at that pace. The limit is this many times the best other
 * holder's pace, and at least a peer call's timeout. A straggler is asked nothing new, and its chunks
 * may be asked of another holder once nothing else is left to ask for (chunk-plan.ts).
 */
const STRAGGLER_FACTOR = 4;

/**
 * In the endgame a farther holder waits for a nearer one to take a straggler's chunks for at most
 * the straggler limit divided by this (see Download's #reachOf): a second copy across zones or
 * regions saved, for a download that ends up to about half a limit later.
 */
const REACH_SHARE = 2;

/** The longest a download from outside this zone waits to hear of its swarm before it starts. */
const PRIME_MS = 300;
/** After the first Watch answer: time for the members arriving with it to be named too. */
const PRIME_GRACE_MS = 50;

/** How long a peer that said it is busy is left alone. */
const BUSY_BACKOFF_MS = 100;
/**
 * Requests a holder may fail (a stall, a reset: on a starved or briefly cut-off node) before the
 * download gives it up; between them it is left alone RETRY_BACKOFF_MS, then four times that. A
 * chunk that fails verification, or a refusal (no such chunk there), gives the holder up at once.
 */
const SOURCE_ATTEMPTS = 3;
/**
 * How long a download that nothing can feed any more (#orphaned) waits for news before it ends: a
 * swarm member's first chunks, or a member it learns of. Well under the stall (three call timeouts).
 */
export const ORPHAN_GRACE_MS = 1000;
const RETRY_BACKOFF_MS = 250;

/**
 * One object's download into the store, chunk by chunk from every peer that has chunks: holders of
 * the whole object, and members of the swarm still getting it themselves (learned from Watch).
 * Each chunk goes to the cheapest hop class that has it, rarest first within it, a few requests per
 * peer at a time. Every chunk is hashed as it arrives against the manifest's digest (or, while an
 * owner is still getting the object from its origin, against the digests that owner announces; the
 * root over them must then match the manifest it ends with). A verified chunk is readable at once, by
 * local readers and by peers, while its disk write runs behind. The object is committed once every
 * chunk is written.
 */
export class Download {
  readonly head: ObjectHead;
  manifest: Manifest | undefined;
  /** Settles when the download ends, either way. */
  readonly finished: Promise<void>;
  /** Resolves when the object is committed to the store; rejects when the download fails. */
  readonly stored: Promise<void>;
  readonly #opts: DownloadOptions;
  readonly #lease: ChunkLease;
  readonly #progress: Progress;
  readonly #authority: PeerTransport | undefined;
  readonly #sources = new Map<string, Source>();
  readonly #verified: Uint8Array;
  #verifiedCount = 0;
  readonly #assigned: Uint8Array;
  #inFlight = 0;
  #watching = 0;
  readonly #unwritten = new Map<number, Buffer>();
  #unwrittenBytes = 0;
  /**
   * An object too large for the hot tier (ObjectStore.tooLargeForHotTier): its chunks arrive in
   * reused buffers (#buffers), or, those that come in a Buffer of their own (FetchChunks on gRPC,
   * or every receive buffer lent), are set cold in the tier (HotTier), so they serve the readers
   * keeping up with this download without flushing it.
   */
  readonly #cold: boolean;
  /**
   * For such an object, the buffers its chunks arrive in (on the bulk stream), each reused once its
   * disk write and every local reader sending it are done with it: a new multi-megabyte Buffer per
   * chunk is new external memory to V8, which sets off a full collection every few tens of MB
   * received (docs/benchmarks.md, transfer). A chunk lent to a peer from memory (Progress.chunk) is
   * kept, never reused. Its chunks stay out of the hot tier (it would hold the buffer): a reader
   * behind the download reads them from #recent, or from disk, as a GET of such an object does once
   * it is stored.
   */
  readonly #buffers: ReusedBuffers | undefined;
  /**
   * Chunks in receive buffers written lately, oldest first, kept (RECENT_BYTES for every download
   * of the node) while the download has readers: a reader a few chunks behind (chunks arrive out of
   * order from parallel calls) reads them here, not from disk, where each read is hashed again.
   */
  readonly #recent = new Map<number, RecentChunk>();
  #recentBytes = 0;
  readonly #into: ReceiveBuffers | undefined;
  readonly #writes = new Set<Promise<void>>();
  readonly #failures: string[] = [];
  /** How many of #failures were a holder answering that it holds the chunk no more. */
  #missing = 0;
  readonly #abort = new AbortController();
  #settle!: { resolve: () => void; reject: (error: Error) => void };
  #settled = false;
  #committing = false;
  #error: Error | undefined;
  #discarded = false;
  #readers = 0;
  #done = false;
  #wake: (() => void)[] = [];
  #stall: NodeJS.Timeout | undefined;
  readonly #stopJoins: () => void;
  /** Chunks left to a nearer member to bring in, since when (performance.now()). */
  readonly #deferred = new Map<number, number>();
  /**
   * False until the first Watch answer names the swarm (or PRIME_MS passed), when no holder is in
   * this node's zone: so members of one zone arriving together divide the imports between them.
   */
  #primed = true;
  /** When the last chunk arrived (performance.now()). */
  #lastChunkAt = 0;
  /** When the authority last announced a new chunk, or the download began (performance.now()). */
  #authorityNewsAt = performance.now();
  #deferTimer: NodeJS.Timeout | undefined;
  readonly #asks = new Set<Ask>();
  #stragglerTimer: NodeJS.Timeout | undefined;
  /** Set while the download waits out ORPHAN_GRACE_MS with nothing left to feed it. */
  #orphanTimer: NodeJS.Timeout | undefined;
  /** Sources whose Watch has not answered yet: what they have is not known. */
  readonly #unheard = new Set<Source>();

  constructor(located: Located, opts: DownloadOptions) {
    this.head = located.head;
    this.manifest = located.manifest;
    this.#opts = opts;
    this.#authority = located.manifest ? undefined : located.authority;
    this.#lease = opts.store.newLease();
    this.#progress = opts.swarm?.begin(this.head) ?? new Progress(this.head);
    if (this.manifest) this.#progress.addDigests(0, this.manifest.chunks);
    this.#verified = new Uint8Array(this.#progress.count);
    this.#cold = opts.store.tooLargeForHotTier(this.head.size, this.head.chunkSize);
    if (this.#cold) {
      const buffers = new ReusedBuffers(
        opts.receiveBuffers ??
          Math.ceil((WRITE_BEHIND_BYTES + RECENT_BYTES) / this.head.chunkSize) +
            Math.max(2, Math.ceil(RECEIVE_SPARE_BYTES / this.head.chunkSize)),
      );
      this.#buffers = buffers;
      // With every buffer lent, the oldest recent chunks go first: a chunk still to come matters more.
      this.#into = {
        take: (size) => {
          let buffer = buffers.take(size);
          while (!buffer && this.#recentBytes > 0) {
            this.#forgetRecent(this.#recentBytes - 1);
            buffer = buffers.take(size);
          }
          return buffer;
        },
        giveBack: (bytes) => buffers.letGo(bytes),
      };
    }
    this.#assigned = new Uint8Array(this.#progress.count);
    this.stored = new Promise((resolve, reject) => (this.#settle = { resolve, reject }));
    this.finished = this.stored.then(
      () => this.#finish(undefined),
      (error: Error) => this.#finish(error),
    );
    located.holders.forEach((holder) => this.#addSource(holder, 'all'));
    this.#stopJoins = opts.swarm?.onJoin(this.head.key, (holder) => this.#addPeer(holder)) ?? (() => {});
    if (this.#authority) {
      const authority = this.#addSource(this.#authority, new Uint8Array(this.#progress.count));
      if (authority) this.#watch(authority, true);
      else this.#fail(new PeerFetchError(this.head.key, ['the owner fetching it is this node']));
    } else {
      const first = [...this.#sources.values()][0];
      if (first) this.#watch(first, false); // joins the swarm: learns its members, and is learned
    }
    const nearest = Math.min(...[...this.#sources.values()].map((s) => s.cls));
    if (nearest > HOP_CLASSES.indexOf('zone')) {
      this.#primed = false;
      setTimeout(() => this.#prime(), PRIME_MS).unref();
    }
    this.#armStall();
    this.#pump();
  }

  #prime(): void {
    if (this.#primed) return;
    this.#primed = true;
    this.#pump();
  }

  get root(): string | undefined {
    return this.manifest?.root;
  }

  /** What locate() tells later readers of this key: they join this download. */
  get located(): Located {
    return {
      head: this.head,
      ...(this.manifest ? { manifest: this.manifest } : {}),
      holders: [...this.#sources.values()].filter((s) => s.has === 'all').map((s) => s.transport),
      ...(this.#authority ? { authority: this.#authority } : {}),
    };
  }

  /** Finish serving current readers, but do not commit the object. */
  discard(): void {
    this.#discarded = true;
  }

  reader(): ChunkSource {
    this.#readers++;
    let closed = false;
    return {
      head: this.head,
      ...(this.manifest ? { manifest: this.manifest } : {}),
      source: 'peer',
      // A plain read cannot say when it is done with the bytes: a receive buffer it gets is kept.
      read: (index) => this.#read(index, 'keep'),
      pass: (first, last) => {
        // Each read holds the receive buffer it gets until `done` is told its bytes were sent.
        const pass = this.#opts.store.pass(this.head.chunkSize, first, last, (index, into) =>
          this.#read(index, 'hold', into),
        );
        return {
          read: (index) => pass.read(index),
          done: (bytes) => {
            pass.done(bytes);
            this.#buffers?.letGo(bytes);
          },
        };
      },
      close: () => {
        if (closed) return;
        closed = true;
        this.#readers--;
        if (this.#readers === 0) this.#forgetRecent(0);
        this.#maybeRelease();
      },
    };
  }

  /**
   * Chunk `index` once verified: from memory while its disk write runs, else from the store. A
   * receive buffer handed out is held (`claim` 'hold': the caller lets go once its bytes are sent)
   * or kept, at once: its write could end, and the buffer be taken again, before the caller runs.
   */
  async #read(
    index: number,
    claim: 'hold' | 'keep',
    into?: (size: number) => Buffer | undefined,
  ): Promise<Buffer> {
    while (!this.#verified[index]) {
      if (this.#error) throw this.#error;
      if (index >= this.#verified.length) throw new RangeError(`no chunk ${index}`);
      await new Promise<void>((resolve) => this.#wake.push(resolve));
    }
    const inMemory = this.#unwritten.get(index) ?? this.#recent.get(index)?.data;
    if (!inMemory) return this.#opts.store.readChunk(this.#progress.digests[index]!, into);
    if (claim === 'hold') this.#buffers?.hold(inMemory);
    else this.#buffers?.keep(inMemory);
    return inMemory;
  }

  #addSource(transport: PeerTransport, has: Uint8Array | 'all'): Source | undefined {
    if (this.#opts.self?.()?.grpc === transport.address) return undefined;
    const known = this.#sources.get(transport.address);
    if (known) {
      if (has === 'all') known.has = 'all';
      return known;
    }
    const cls = HOP_CLASSES.indexOf(this.#opts.hopClassOf?.(transport) ?? 'remote');
    const source: Source = {
      transport,
      id: transport.id,
      has,
      cls,
      rank: this.#sources.size,
      inFlight: 0,
      dead: false,
      gone: false,
      busyUntil: 0,
      failures: 0,
      progressAt: 0,
      pace: undefined,
      setback: false,
      straggling: false,
      reach: undefined,
    };
    this.#sources.set(transport.address, source);
    return source;
  }

  /** A member of the swarm (named by a peer, or one that watched this node): a possible source. */
  #addPeer(holder: Holder): void {
    if (this.#settled) return;
    const transport = this.#opts.resolve?.(holder);
    if (!transport || this.#sources.has(transport.address)) return;
    const source = this.#addSource(transport, new Uint8Array(this.#progress.count));
    if (source && this.#watching < MAX_WATCHED) this.#watch(source, false);
  }

  /**
   * Follows `source`'s Watch: the chunks it gets, the swarm members it names and, from the
   * authority (the owner getting the object from its origin), the digests and the manifest.
   */
  #watch(source: Source, authoritative: boolean): void {
    this.#watching++;
    this.#unheard.add(source);
    const { key } = this.head;
    const id = source.transport.id;
    (async () => {
      try {
        for await (const u of source.transport.watch(key, this.#opts.self?.(), this.#abort.signal)) {
          this.#unheard.delete(source);
          if (this.#settled) return;
          if (u.head && (u.head.size !== this.head.size || u.head.chunkSize !== this.head.chunkSize))
            throw new PeerError(id, 'Watch: another shape of the object');
          if (authoritative && u.digests.length > 0) {
            if (!u.digests.every(isDigest)) throw new PeerError(id, 'Watch: malformed digests');
            const known = this.#progress.digests.length;
            this.#progress.addDigests(u.firstDigest, u.digests);
            if (this.#progress.digests.length > known) this.#authorityNewsAt = performance.now();
            this.#armStall();
          }
          if (source.has !== 'all') {
            for (const i of u.have)
              if (Number.isInteger(i) && i >= 0 && i < source.has.length) source.has[i] = 1;
          }
          for (const peer of u.peers) this.#addPeer(peer);
          if (u.manifest) {
            const manifest = parseManifest(u.manifest, isKey);
            this.#opts.verify?.(manifest);
            this.#learnManifest(source, authoritative, manifest);
          }
          if (!this.#primed) setTimeout(() => this.#prime(), PRIME_GRACE_MS).unref();
          this.#pump();
        }
        if (authoritative && !this.manifest) throw new PeerError(id, 'Watch ended before the manifest');
      } catch (error) {
        if (this.#settled) return;
        const message = (error as Error).message;
        this.#failures.push(message);
        // It neither holds nor is getting the object, or its own download found no one has it.
        if (error instanceof PeerRefusedError && error.code === NOT_FOUND) this.#missing++;
        if (authoritative && !this.manifest) {
          this.#fail(new PeerFetchError(key, this.#failures, this.#missing));
          return;
        }
        if (source.has !== 'all') source.dead = true;
        this.#opts.logger.debug({ peer: id, key, err: message }, 'swarm peer watch ended');
        this.#pump();
      } finally {
        this.#watching--;
        if (this.#unheard.delete(source)) this.#pump();
      }
    })().catch((error: unknown) =>
      this.#opts.logger.warn({ peer: id, key, err: (error as Error).message }, 'swarm peer watch failed'),
    );
  }

  #learnManifest(source: Source, authoritative: boolean, manifest: Manifest): void {
    const id = source.transport.id;
    if (manifest.key !== this.head.key) throw new PeerError(id, 'Watch: manifest of another key');
    if (!this.manifest && authoritative) {
      const known = this.#progress.digests;
      const same =
        manifest.size === this.head.size &&
        manifest.chunkSize === this.head.chunkSize &&
        known.every((digest, i) => manifest.chunks[i] === digest);
      if (!same) throw new PeerError(id, 'Watch: the manifest contradicts the digests announced');
      this.manifest = manifest;
      this.#progress.addDigests(0, manifest.chunks);
    }
    if (manifest.root === this.manifest?.root) source.has = 'all';
    this.#checkDone();
  }

  /** Asks for the chunks the plan (chunk-plan.ts) hands out now. */
  #pump(): void {
    if (this.#settled || this.#committing || !this.#primed) return;
    if (this.#unwrittenBytes > WRITE_BEHIND_BYTES) return; // a finished write pumps again
    const now = performance.now();
    const self = this.#opts.self?.()?.nodeId;
    const stragglers = this.#judgeStragglers(now);
    for (const s of this.#sources.values()) s.reach = stragglers && this.#reachOf(s, now);
    // A straggler's calls hold no slot of MAX_IN_FLIGHT, up to MAX_IN_FLIGHT of them: stragglers
    // enough to fill every slot would leave no room for anyone to overtake them; at most as many
    // calls again are under way.
    let stragglerCalls = 0;
    for (const s of this.#sources.values()) if (s.straggling) stragglerCalls += s.inFlight;
    const inFlight = this.#inFlight - Math.min(stragglerCalls, MAX_IN_FLIGHT);
    const plan = planChunks({
      key: this.head.key,
      known: this.#progress.digests.length,
      verified: this.#verified,
      assigned: this.#assigned,
      stragglers,
      sources: [...this.#sources.values()],
      inFlight,
      fromOrigin: this.#authority !== undefined,
      now,
      ...(self ? { importer: { self, deferred: this.#deferred, lastChunkAt: this.#lastChunkAt } } : {}),
    });
    for (const i of plan.deferred) this.#deferred.set(i, now);
    if (plan.deferred.length > 0) this.#recheckDeferred();
    for (const { source, indexes } of plan.requests) this.#request(source, indexes);
    if (this.#inFlight === 0 && this.#verifiedCount < this.#verified.length) {
      if (plan.alive === 0) this.#fail(new PeerFetchError(this.head.key, this.#failures, this.#missing));
      else if (this.#orphanTimer === undefined && this.#orphaned()) {
        this.#orphanTimer = setTimeout(() => {
          this.#orphanTimer = undefined;
          if (this.#inFlight === 0 && this.#orphaned())
            this.#fail(new PeerFetchError(this.head.key, this.#failures, this.#missing));
          else this.#pump();
        }, ORPHAN_GRACE_MS);
        this.#orphanTimer.unref();
      }
    }
    this.#watchStragglers(now);
  }

  /**
   * Whether nothing can feed this download now: every holder of the whole object it knew answered
   * that it holds it no more, no owner is getting it from its origin, and every swarm member it
   * follows has answered its Watch and holds no chunk still wanted. The download then ends if that
   * is still so after ORPHAN_GRACE_MS (a member may yet get chunks from a holder this node was not
   * named, or name one); waited on for the whole stall (three call timeouts), two members following
   * each other held each other's download, and its readers, long after the object was gone
   * everywhere. A holder that failed instead (a path cut for this node alone) leaves the swarm to be
   * waited on for the stall: its members may still get the chunks from it.
   */
  #orphaned(): boolean {
    if (this.#authority !== undefined || this.#settled) return false;
    for (const s of this.#unheard) if (!s.dead) return false;
    let hadWhole = false;
    for (const s of this.#sources.values()) {
      if (s.has === 'all') {
        if (!s.gone) return false;
        hadWhole = true;
      } else if (!s.dead) {
        for (let i = 0; i < s.has.length; i++) if (s.has[i] && !this.#verified[i]) return false;
      }
    }
    return hadWhole;
  }

  /**
   * The best pace among the holders other than `source` that delivered and keep it (undefined: none):
   * one silent with calls under way for longer than four times its pace does not (a holder fast on
   * its first chunk, then silent, would make every other look slow). `lenient` (for judging a
   * holder's overtaking calls, which ends them as failures) leaves out a holder with a setback too:
   * fast on its first call, then refusing, failing or overtaken, it would make an honest overtaker
   * look slow. Not when judging the holders first asked: one brief refusal of the fast holder would
   * let a slow one hold the download to its pace.
   */
  #bestOtherPace(source: Source, now = performance.now(), lenient = false): number | undefined {
    let best: number | undefined;
    for (const s of this.#sources.values()) {
      if (s === source || s.dead || (lenient && s.setback) || s.pace === undefined) continue;
      if (s.inFlight > 0 && now - s.progressAt > STRAGGLER_FACTOR * s.pace) continue;
      if (best === undefined || s.pace < best) best = s.pace;
    }
    return best;
  }

  /** How long `source` may deliver nothing, with requests under way, before it is a straggler. */
  #stragglerLimit(source: Source, now = performance.now(), lenient = false): number {
    return this.#limitFor(this.#bestOtherPace(source, now, lenient));
  }

  /** The straggler limit, given the best other holder's pace. */
  #limitFor(bestOtherPace: number | undefined): number {
    return Math.max(this.#opts.timeoutMs, STRAGGLER_FACTOR * (bestOtherPace ?? 0));
  }

  /** Whether `source` is a straggler now (see STRAGGLER_FACTOR; `lenient`: see #bestOtherPace). */
  #isStraggling(source: Source, now: number, lenient = false): boolean {
    if (source.inFlight === 0) return false;
    const best = this.#bestOtherPace(source, now, lenient);
    const limit = this.#limitFor(best);
    if (now - source.progressAt > limit) return true;
    if (best === undefined || source.pace === undefined || source.pace <= STRAGGLER_FACTOR * best)
      return false;
    return this.#owedBy(source) * source.pace > limit;
  }

  /** How many chunks asked of `source` are still to come (from it or from others). */
  #owedBy(source: Source): number {
    let owed = 0;
    for (const ask of this.#asks)
      if (ask.source === source)
        for (const i of ask.indexes.slice(ask.delivered)) if (!this.#verified[i]) owed++;
    return owed;
  }

  /**
   * Marks each holder a straggler or not; ends the calls of holders that overtook a straggler and
   * straggled themselves, once such a call had the limit to show its pace (silent that long, or
   * under way that long), so others may be asked (one failure of the holder for all its calls ended
   * at once); returns the chunks asked of stragglers alone, and of whom.
   */
  #judgeStragglers(now: number): Map<number, string> | undefined {
    for (const s of this.#sources.values()) s.straggling = this.#isStraggling(s, now);
    let found: Map<number, string> | undefined;
    const penalized = new Set<Source>();
    for (const ask of this.#asks) {
      if (!ask.source.straggling || ask.overtaken || ask.stalled) continue;
      if (ask.second) {
        // Ending it counts against its holder: judged leniently (a straggler by the strict rule may
        // not be one by the lenient; the lenient limit is never shorter).
        if (!this.#isStraggling(ask.source, now, true)) continue;
        const since = Math.min(ask.source.progressAt, ask.started);
        if (now - since <= this.#stragglerLimit(ask.source, now, true)) continue;
        ask.stalled = true;
        ask.penalized = !penalized.has(ask.source);
        penalized.add(ask.source);
        ask.abort.abort();
        continue;
      }
      for (const i of ask.indexes.slice(ask.delivered))
        if (!this.#verified[i] && this.#assigned[i] === 1) (found ??= new Map()).set(i, ask.source.id);
    }
    return found;
  }

  /**
   * How many chunks more than it still owes `source` would deliver within half the straggler limit
   * at the pace of one of its calls (the chunks left to it come in one), or at the pace its silence
   * since its last chunk shows if slower: in the endgame a farther holder leaves that many of a
   * straggler's chunks to it (chunk-plan.ts), which saves their second copy across zones or regions
   * and may end the download up to about half that limit later. Undefined for a straggler, or a
   * holder whose pace is unknown or may be stale (a setback): a farther holder does not wait for
   * those.
   */
  #reachOf(source: Source, now: number): number | undefined {
    const { pace } = source;
    if (source.dead || source.straggling || source.setback || pace === undefined) return undefined;
    const perCall = pace * Math.max(1, source.inFlight);
    const slowest = source.inFlight > 0 ? Math.max(perCall, now - source.progressAt) : perCall;
    const horizon = this.#stragglerLimit(source, now) / REACH_SHARE;
    return Math.max(0, Math.floor(horizon / slowest) - this.#owedBy(source));
  }

  /** Pumps again when the first holder with requests under way would turn straggler by its silence. */
  #watchStragglers(now: number): void {
    clearTimeout(this.#stragglerTimer);
    this.#stragglerTimer = undefined;
    if (this.#settled) return;
    let next = Infinity;
    for (const s of this.#sources.values()) {
      if (s.inFlight === 0 || s.straggling) continue;
      next = Math.min(next, s.progressAt + this.#stragglerLimit(s, now));
    }
    // An overtaking call of a straggler is judged (leniently) once it had the limit to show its
    // pace; one that is no straggler by the lenient rule, once its silence would make it one (its
    // deliveries pump anyway). Past times would spin this timer: neither is past here.
    for (const ask of this.#asks) {
      if (!ask.second || !ask.source.straggling || ask.stalled) continue;
      const limit = this.#stragglerLimit(ask.source, now, true);
      const since = this.#isStraggling(ask.source, now, true)
        ? Math.min(ask.source.progressAt, ask.started)
        : ask.source.progressAt;
      next = Math.min(next, since + limit);
    }
    if (next === Infinity) return;
    this.#stragglerTimer = setTimeout(() => this.#pump(), Math.max(0, next - now) + 1);
    this.#stragglerTimer.unref();
  }

  /** Pumps again once deferred chunks may be due (and again, while any stay deferred). */
  #recheckDeferred(): void {
    if (this.#deferTimer || this.#settled) return;
    this.#deferTimer = setTimeout(() => {
      this.#deferTimer = undefined;
      this.#pump();
      if ([...this.#deferred.keys()].some((i) => !this.#verified[i])) this.#recheckDeferred();
    }, IMPORT_WAIT_MS / 4);
    this.#deferTimer.unref();
  }

  /** Asks `source` for the chunks `indexes` (consecutive, in order) in one FetchChunks call. */
  #request(source: Source, indexes: number[]): void {
    const second = indexes.some((i) => this.#assigned[i]! > 0);
    for (const i of indexes) this.#assigned[i] = this.#assigned[i]! + 1;
    if (source.inFlight === 0) source.progressAt = performance.now();
    source.inFlight++;
    this.#inFlight++;
    const ask: Ask = {
      source,
      indexes,
      delivered: 0,
      abort: new AbortController(),
      overtaken: false,
      second,
      stalled: false,
      penalized: false,
      started: performance.now(),
    };
    this.#asks.add(ask);
    const endAsk = () => ask.abort.abort();
    this.#abort.signal.addEventListener('abort', endAsk, { once: true });
    const digests = indexes.map((i) => this.#progress.digests[i]!);
    const lengths = indexes.map((i) => chunkLength(this.head.size, this.head.chunkSize, i));
    const id = source.transport.id;
    // A span per chunk batch, naming the peer, where it is and how far; the FetchChunks call's client
    // span (transport/rpc-spans.ts) is its child, and the peer's server span that one's.
    const place = this.#opts.placeOf?.(source.transport);
    const span = tracer().startSpan('edgemesh.fetch_chunks', {
      kind: SpanKind.INTERNAL,
      attributes: {
        'edgemesh.peer': id,
        ...(place?.zone ? { 'edgemesh.peer.zone': place.zone } : {}),
        ...(place?.region ? { 'edgemesh.peer.region': place.region } : {}),
        'edgemesh.hop': HOP_CLASSES[source.cls] ?? 'remote',
        'edgemesh.chunks': indexes.length,
        'edgemesh.first_chunk': indexes[0]!,
        ...(second ? { 'edgemesh.overtaking': true } : {}),
      },
    });
    const started = performance.now();
    context
      .with(trace.setSpan(context.active(), span), async () => {
        try {
          const chunks = source.transport.fetchChunks(digests, lengths, ask.abort.signal, this.#into);
          for await (const chunk of chunks) {
            const n = ask.delivered;
            const index = indexes[n]!;
            const digest = digests[n]!;
            const { data } = chunk;
            // What the bytes hash to, as the transport hashed them on arrival or here.
            if ((chunk.digest ?? digestOf(data)) !== digest) {
              this.#buffers?.letGo(data);
              throw new IntegrityError(digest, id);
            }
            this.#delivered(source);
            ask.delivered++;
            this.#assigned[index] = this.#assigned[index]! - 1;
            this.#accept(index, digest, data, source);
          }
          if (ask.delivered < indexes.length)
            throw new PeerError(id, `sent ${ask.delivered} of ${indexes.length} chunks`);
          this.#opts.onBatch?.(HOP_CLASSES[source.cls] ?? 'remote', (performance.now() - started) / 1000);
          this.#opts.onOutcome?.(source.transport, 'good');
        } catch (error) {
          const quiet = ask.overtaken || (ask.stalled && !ask.penalized);
          if (quiet && !this.#settled && !(error instanceof IntegrityError)) {
            // Others delivered what it still owed, or another of its calls ended as stalled counts
            // for this one: a slow holder, not one more failure (a bad chunk sent before the call
            // ended still counts against it).
            span.setAttribute('edgemesh.overtaken', ask.overtaken);
            if (ask.overtaken) source.setback = true; // its pace before it stuck is stale
            this.#opts.logger.debug({ peer: id, key: this.head.key }, 'slow holder overtaken by others');
          } else {
            // Asked for a straggler's chunks, it straggled too: given up like a stalled call.
            const failure = ask.stalled
              ? new PeerError(
                  id,
                  `FetchChunks: no chunk of a straggler's for ${this.#stragglerLimit(source, undefined, true)} ms`,
                )
              : (error as Error);
            span.setStatus({ code: 2, message: failure.message });
            if (!this.#settled) this.#sourceFailed(source, failure);
          }
        } finally {
          span.end();
          this.#abort.signal.removeEventListener('abort', endAsk);
          this.#asks.delete(ask);
          for (const i of indexes.slice(ask.delivered)) this.#assigned[i] = this.#assigned[i]! - 1;
          source.inFlight--;
          this.#inFlight--;
          this.#pump();
        }
      })
      // Its own errors are handled inside; anything else (a throwing #pump) is logged, not lost.
      .catch((error: unknown) =>
        this.#opts.logger.warn({ err: (error as Error).message }, 'chunk batch failed'),
      );
  }

  #sourceFailed(source: Source, error: Error): void {
    const { key } = this.head;
    const id = source.transport.id;
    source.setback = true;
    if (error instanceof PeerBusyError) {
      source.busyUntil = performance.now() + BUSY_BACKOFF_MS;
      setTimeout(() => this.#pump(), BUSY_BACKOFF_MS + 1).unref();
      return;
    }
    this.#failures.push(error.message);
    if (error instanceof PeerRefusedError && error.code === NOT_FOUND) {
      this.#missing++;
      // Once per holder: two requests to it may be refused.
      if (source.has === 'all' && !source.gone) this.#opts.counters.holdersGone++;
      source.gone = true;
    }
    // A failure it is given another chance after counts against it only if it runs out of them. A
    // refusal (it lacks the chunk, has it damaged) would be the same again: no other chance.
    const again = !(error instanceof IntegrityError) && !(error instanceof PeerRefusedError);
    if (again && ++source.failures < SOURCE_ATTEMPTS) {
      const backoff = RETRY_BACKOFF_MS * 4 ** (source.failures - 1);
      source.busyUntil = performance.now() + backoff;
      setTimeout(() => this.#pump(), backoff + 1).unref();
      this.#opts.logger.warn(
        { peer: id, key, err: error.message, retryInMs: backoff },
        'peer failed during fetch; asking others, and it again later',
      );
      return;
    }
    source.dead = true;
    if (!this.#abort.signal.aborted)
      this.#opts.onOutcome?.(source.transport, error instanceof IntegrityError ? 'bad-chunk' : 'failed');
    if (error instanceof IntegrityError) {
      Counters.bump(this.#opts.counters.badChunksByPeer, id);
      this.#opts.counters.rejectedByHop[HOP_CLASSES[source.cls] ?? 'remote']++;
      this.#opts.logger.warn(
        { peer: id, key, chunk: error.digest },
        'peer sent a chunk that failed verification; getting it elsewhere',
      );
    } else if (source.gone) {
      // A holder that let the object go since it was named (evicted, replaced): a cache's churn, not
      // a fault; under a soak's load each agent heard this 160 times a minute.
      this.#opts.logger.debug(
        { peer: id, key, err: error.message },
        'peer holds it no more; getting it elsewhere',
      );
    } else {
      this.#opts.logger.warn(
        { peer: id, key, err: error.message },
        'peer failed during fetch; getting it elsewhere',
      );
    }
  }

  /** A chunk came from `source`: how long it took goes into its pace (a moving average). */
  #delivered(source: Source): void {
    const now = performance.now();
    const took = now - source.progressAt;
    source.pace = source.pace === undefined ? took : (3 * source.pace + took) / 4;
    source.progressAt = now;
    source.setback = false;
  }

  /** Takes a verified chunk in; `data`, when in a receive buffer, is let go of when done with. */
  #accept(index: number, digest: string, data: Buffer, source: Source): void {
    if (this.#verified[index] || this.#settled) return this.#buffers?.letGo(data);
    this.#verified[index] = 1;
    this.#verifiedCount++;
    // A straggler's call whose chunks have all come from others now ends.
    for (const ask of this.#asks) {
      if (ask.source === source || ask.overtaken || !ask.indexes.includes(index)) continue;
      if (ask.indexes.slice(ask.delivered).every((i) => this.#verified[i])) {
        ask.overtaken = true;
        ask.abort.abort();
      }
    }
    this.#lastChunkAt = performance.now();
    const counters = this.#opts.counters;
    counters.fromPeer(source.transport.id, data.length);
    counters.bytesByHop[HOP_CLASSES[source.cls] ?? 'remote'] += data.length;
    const buffers = this.#buffers;
    this.#progress.hold(index, data, buffers?.lends(data) ? () => buffers.keep(data) : undefined);
    this.#writeBehind(index, digest, data);
    this.#armStall();
    this.#notify();
  }

  #writeBehind(index: number, digest: string, data: Buffer): void {
    this.#unwritten.set(index, data);
    this.#unwrittenBytes += data.length;
    // A receive buffer stays out of the hot tier, which would hold it.
    const placement = this.#buffers?.lends(data) ? 'none' : this.#cold ? 'cold' : 'hot';
    const write: Promise<void> = this.#opts.store
      .addVerifiedChunk(this.#lease, digest, data, placement)
      .catch((error: unknown) => this.#fail(error instanceof Error ? error : new Error(String(error))))
      .finally(() => {
        // Off the in-memory maps before its buffer may be reused (a failed write: the download has
        // failed, and its memory copy goes too).
        this.#progress.written(index);
        this.#unwritten.delete(index);
        this.#unwrittenBytes -= data.length;
        if (this.#readers > 0 && !this.#error && this.#buffers?.lends(data)) this.#keepRecent(index, data);
        else this.#buffers?.letGo(data);
        this.#writes.delete(write);
        this.#pump();
        this.#checkDone();
      });
    this.#writes.add(write);
  }

  /** Commits once every chunk is verified and written and the manifest is known. */
  #checkDone(): void {
    const manifest = this.manifest;
    if (this.#settled || this.#committing || !manifest) return;
    if (this.#verifiedCount < this.#verified.length || this.#writes.size > 0) return;
    this.#committing = true;
    if (rootDigest(manifest.size, manifest.chunkSize, this.#progress.digests) !== manifest.root) {
      this.#fail(new PeerFetchError(manifest.key, ['the chunks do not add up to the manifest root']));
      return;
    }
    if (this.#discarded) {
      this.#opts.logger.info({ key: manifest.key }, 'download not kept: the object was deleted while it ran');
      this.#succeed(manifest, false);
      return;
    }
    // A copy keeps what its signer said: its creation time, expiry and signature.
    this.#opts.store.commit(this.#lease, manifest).then(
      () => this.#succeed(manifest, true),
      (error: Error) => this.#fail(error),
    );
  }

  #succeed(manifest: Manifest, committed: boolean): void {
    if (this.#settled) return;
    this.#settled = true;
    if (committed) this.#progress.complete(manifest);
    else this.#progress.fail(new Error('discarded'));
    this.#settle.resolve();
  }

  #fail(error: Error): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#progress.fail(error);
    this.#settle.reject(error);
  }

  /**
   * Fails the download when nothing arrives for a while, unless calls are under way or the owner
   * getting it from its origin announced a new chunk within a chunk's time at the slowest origin
   * rate waited for (originMinBytesPerSecond).
   */
  #armStall(): void {
    clearTimeout(this.#stall);
    if (this.#settled) return;
    const limit = this.#opts.timeoutMs * 3;
    this.#stall = setTimeout(() => {
      const rate = this.#opts.originMinBytesPerSecond ?? ORIGIN_MIN_BYTES_PER_S;
      const originGrace = Math.max(limit, (this.head.chunkSize / rate) * 1000);
      const quietFor = performance.now() - this.#authorityNewsAt;
      const watchingOrigin = this.#authority !== undefined && !this.manifest && this.#watching > 0;
      if ((watchingOrigin && quietFor < originGrace) || this.#inFlight > 0) return this.#armStall();
      this.#fail(
        new PeerFetchError(this.head.key, [
          ...this.#failures,
          watchingOrigin
            ? `the owner getting it from its origin announced no chunk for ${Math.round(quietFor)} ms`
            : `no chunk for ${limit} ms`,
        ]),
      );
    }, limit);
    this.#stall.unref();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = [];
    for (const resolve of wake) resolve();
  }

  #finish(error: Error | undefined): void {
    clearTimeout(this.#stall);
    clearTimeout(this.#orphanTimer);
    clearTimeout(this.#stragglerTimer);
    this.#stopJoins();
    this.#abort.abort();
    this.#error = error;
    this.#done = true;
    this.#buffers?.close(); // nothing more to receive: its free buffers go, and those let go later
    if (error) this.#forgetRecent(0);
    this.#notify();
    this.#maybeRelease();
  }

  /** Keeps written chunk `index` for readers behind (#recent); past RECENT_BYTES, the node's oldest go. */
  #keepRecent(index: number, data: Buffer): void {
    const recent = { data, forget: () => this.#forgetOne(index) };
    this.#recent.set(index, recent);
    recentOnNode.add(recent);
    this.#recentBytes += data.length;
    recentBytesOnNode += data.length;
    for (const oldest of recentOnNode) {
      if (recentBytesOnNode <= RECENT_BYTES) break;
      oldest.forget();
    }
  }

  /** Lets go of this download's oldest recent chunks until at most `bytes` of them are left. */
  #forgetRecent(bytes: number): void {
    for (const index of this.#recent.keys()) {
      if (this.#recentBytes <= bytes) return;
      this.#forgetOne(index);
    }
  }

  #forgetOne(index: number): void {
    const recent = this.#recent.get(index);
    if (!recent) return;
    this.#recent.delete(index);
    recentOnNode.delete(recent);
    this.#recentBytes -= recent.data.length;
    recentBytesOnNode -= recent.data.length;
    this.#buffers?.letGo(recent.data);
  }

  #maybeRelease(): void {
    if (this.#done && this.#readers === 0) this.#lease.release();
  }
}
