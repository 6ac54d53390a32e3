import { digestOf } from '../cache/chunking.ts';
import { IntegrityError } from '../cache/errors.ts';
import { type Manifest, manifestChunkLength, parseManifest } from '../cache/manifest.ts';
import type { Holder } from '../overlay/holder-index.ts';
import type { ChunkLease, ObjectStore } from '../cache/object-store.ts';
import { isKey } from '../keys.ts';
import { Counters } from '../telemetry/counters.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { Clock } from '../time/clock.ts';
import { PeerError, type PeerTransport } from '../transport/peer-transport.ts';
import type { ChunkSource } from './chunk-source.ts';

/** No holder could deliver the object; `failures` says what each one did. */
export class PeerFetchError extends Error {
  override name = 'PeerFetchError';
  readonly key: string;
  readonly failures: readonly string[];
  constructor(key: string, failures: readonly string[]) {
    super(`could not fetch ${key} from any peer: ${failures.join('; ') || 'no holder'}`);
    this.key = key;
    this.failures = failures;
  }
}

/** Chunks asked of one holder per FetchChunks call. */
const CHUNKS_PER_CALL = 64;

export interface Located {
  manifest: Manifest;
  /** Peers that announced this exact manifest root, in answer order. */
  holders: PeerTransport[];
}

export interface PeerFetcherOptions {
  store: ObjectStore;
  peers: () => readonly PeerTransport[];
  /** The peers that own `key` by placement: asked first, as they know of it if anyone does. */
  owners?: (key: string) => readonly PeerTransport[];
  /** A connection to a holder an owner named, if it is a member this node trusts; else undefined. */
  resolve?: (holder: Holder) => PeerTransport | undefined;
  /** Orders holders cheapest first (same zone, same region, then by RTT and load). */
  rank?: (holders: readonly PeerTransport[]) => PeerTransport[];
  counters: Counters;
  logger: Logger;
  clock: Clock;
  timeoutMs: number;
}

/**
 * Gets objects this agent lacks from peers that hold them. One download per key at a time: later
 * readers join the download in progress. Every chunk is hashed before it is stored or handed to a
 * reader; a chunk that fails is blamed on the peer that sent it (counter and log), and the download
 * carries on from the same chunk with the next holder.
 */
export class PeerFetcher {
  readonly #opts: PeerFetcherOptions;
  readonly #inflight = new Map<string, Download>();

  constructor(opts: PeerFetcherOptions) {
    this.#opts = opts;
  }

  /**
   * Finds who holds `key`: asks its owners (one hop: they hold it or know who does), and everyone
   * else only when no owner knows it. The version most holders agree on wins; holders come cheapest
   * first.
   */
  async locate(key: string): Promise<Located | undefined> {
    const inflight = this.#inflight.get(key);
    if (inflight) return { manifest: inflight.manifest, holders: inflight.holders };
    const owners = this.#opts.owners?.(key) ?? [];
    const isOwner = new Set(owners.map((o) => o.address));
    const others = this.#opts.peers().filter((p) => !isOwner.has(p.address));
    const fromOwners = await this.#ask(key, owners);
    const found = fromOwners ?? (await this.#ask(key, others));
    if (!found || found === 'purged') return undefined; // purged: a stale copy elsewhere must not answer
    return { manifest: found.manifest, holders: this.#opts.rank?.(found.holders) ?? found.holders };
  }

  /** What `peers` know of `key`: the best-supported version, 'purged', or undefined for nothing. */
  async #ask(key: string, peers: readonly PeerTransport[]): Promise<Located | 'purged' | undefined> {
    if (peers.length === 0) return undefined;
    const signal = AbortSignal.timeout(this.#opts.timeoutMs);
    const answers = await Promise.all(
      peers.map(async (peer) => {
        try {
          const answer = await peer.getManifest(key, signal);
          if (answer === undefined) return undefined;
          if (answer.purgedAtMs !== undefined)
            return { kind: 'purged' as const, peer, purgedAtMs: answer.purgedAtMs };
          const manifest = parseManifest(answer.manifest, isKey);
          if (manifest.key !== key) throw new Error(`answered for another key ${manifest.key}`);
          return { kind: 'found' as const, peer, manifest, holds: answer.holds, holders: answer.holders };
        } catch (error) {
          this.#opts.logger.warn(
            { peer: peer.id, key, err: (error as Error).message },
            'peer gave no usable manifest',
          );
          return undefined;
        }
      }),
    );
    const byRoot = new Map<string, { manifest: Manifest; holders: Map<string, PeerTransport> }>();
    let purgedAtMs = -1;
    for (const answer of answers) {
      if (!answer) continue;
      if (answer.kind === 'purged') {
        purgedAtMs = Math.max(purgedAtMs, answer.purgedAtMs);
        continue;
      }
      const group = byRoot.get(answer.manifest.root) ?? { manifest: answer.manifest, holders: new Map() };
      byRoot.set(answer.manifest.root, group);
      if (answer.holds) group.holders.set(answer.peer.address, answer.peer);
      for (const holder of answer.holders) {
        const transport = this.#opts.resolve?.(holder);
        if (transport) group.holders.set(transport.address, transport);
      }
    }
    const best = [...byRoot.values()]
      .filter((g) => g.holders.size > 0 && g.manifest.createdAtMs > purgedAtMs)
      .sort((a, b) => b.holders.size - a.holders.size)[0];
    if (!best) return purgedAtMs >= 0 ? 'purged' : undefined;
    return { manifest: best.manifest, holders: [...best.holders.values()] };
  }

  /**
   * Stops any download of `key` from publishing the object (a DELETE arrived while it ran); its
   * current readers still get their bytes. True when a download was under way.
   */
  discard(key: string): boolean {
    const download = this.#inflight.get(key);
    if (!download) return false;
    download.discard();
    this.#inflight.delete(key);
    return true;
  }

  /** A reader of `located`'s chunks, downloading them (or joining the download in progress). */
  open(located: Located): ChunkSource {
    return this.#download(located).reader();
  }

  /**
   * Copies version `root` of `key` from `sources` into the store, resolving once it is committed
   * (at once if the store has it already). Rejects when no source has that version or the copy fails.
   */
  async copy(key: string, root: string, sources: readonly PeerTransport[]): Promise<void> {
    if (this.#opts.store.lookup(key)?.root === root) return;
    const found = await this.#ask(key, sources);
    if (!found || found === 'purged' || found.manifest.root !== root)
      throw new PeerFetchError(key, ['the source does not hold that version']);
    await this.#download(found).stored;
    if (this.#opts.store.lookup(key)?.root !== root)
      throw new PeerFetchError(key, ['deleted or replaced while copying']);
  }

  #download(located: Located): Download {
    const key = located.manifest.key;
    let download = this.#inflight.get(key);
    if (!download || download.manifest.root !== located.manifest.root) {
      download = new Download(located, this.#opts);
      this.#inflight.set(key, download);
      const started = download;
      void started.finished.finally(() => {
        if (this.#inflight.get(key) === started) this.#inflight.delete(key);
      });
    }
    return download;
  }
}

/** Verified chunk bytes held in memory while their disk writes are under way, per download. */
const WRITE_BEHIND_BYTES = 64 * 1024 * 1024;

/**
 * One object's download from its holders into the store. A chunk is hashed as it arrives and is
 * readable from memory at once; its disk write runs behind, within WRITE_BEHIND_BYTES, so readers
 * go at network speed rather than disk speed. The object is committed once every write has landed.
 */
class Download {
  readonly manifest: Manifest;
  readonly holders: PeerTransport[];
  /** Settles when the download ends, either way. */
  readonly finished: Promise<void>;
  /** Resolves when the object is committed to the store; rejects when the download fails. */
  readonly stored: Promise<void>;
  readonly #opts: PeerFetcherOptions;
  readonly #lease: ChunkLease;
  /** Chunks 0..#verified-1 have arrived and passed verification. */
  #verified = 0;
  /** Verified chunks whose disk writes have not finished, by index. */
  readonly #unwritten = new Map<number, Buffer>();
  #unwrittenBytes = 0;
  readonly #writes = new Set<Promise<void>>();
  #writeError: Error | undefined;
  #error: Error | undefined;
  #discarded = false;
  #readers = 0;
  #done = false;
  #wake: (() => void)[] = [];

  constructor(located: Located, opts: PeerFetcherOptions) {
    this.manifest = located.manifest;
    this.holders = [...located.holders];
    this.#opts = opts;
    this.#lease = opts.store.newLease();
    this.stored = this.#run();
    this.finished = this.stored.then(
      () => this.#finish(undefined),
      (error: Error) => this.#finish(error),
    );
  }

  /** Finish serving current readers, but do not commit the object. */
  discard(): void {
    this.#discarded = true;
  }

  reader(): ChunkSource {
    this.#readers++;
    let closed = false;
    return {
      manifest: this.manifest,
      source: 'peer',
      read: (index) => this.#read(index),
      close: () => {
        if (closed) return;
        closed = true;
        this.#readers--;
        this.#maybeRelease();
      },
    };
  }

  async #read(index: number): Promise<Buffer> {
    while (this.#verified <= index) {
      if (this.#error) throw this.#error;
      await new Promise<void>((resolve) => this.#wake.push(resolve));
    }
    return this.#unwritten.get(index) ?? this.#opts.store.readChunk(this.manifest.chunks[index]!);
  }

  async #run(): Promise<void> {
    const { manifest } = this;
    const failures: string[] = [];
    for (const peer of this.holders) {
      if (this.#verified === manifest.chunks.length) break;
      try {
        await this.#pullFrom(peer);
      } catch (error) {
        if (this.#writeError) break; // our disk failed: no other peer would help
        failures.push((error as Error).message);
        if (error instanceof IntegrityError) {
          Counters.bump(this.#opts.counters.badChunksByPeer, peer.id);
          this.#opts.logger.warn(
            { peer: peer.id, key: manifest.key, chunk: error.digest },
            'peer sent a chunk that failed verification; trying the next holder',
          );
        } else if (error instanceof PeerError) {
          this.#opts.logger.warn(
            { peer: peer.id, key: manifest.key, err: error.message },
            'peer failed during fetch; trying the next holder',
          );
        } else {
          throw error;
        }
      }
    }
    await Promise.all(this.#writes);
    if (this.#writeError) throw this.#writeError;
    if (this.#verified < manifest.chunks.length) throw new PeerFetchError(manifest.key, failures);
    if (this.#discarded) return;
    const ttlMs =
      manifest.expiresAtMs === undefined
        ? undefined
        : Math.max(1, manifest.expiresAtMs - this.#opts.clock.now());
    await this.#opts.store.commit(this.#lease, { ...manifest, ...(ttlMs === undefined ? {} : { ttlMs }) });
  }

  /** Pulls the chunks from #verified onwards from `peer`, verifying each as it arrives. */
  async #pullFrom(peer: PeerTransport): Promise<void> {
    const { manifest } = this;
    while (this.#verified < manifest.chunks.length) {
      const first = this.#verified;
      const digests = manifest.chunks.slice(first, first + CHUNKS_PER_CALL);
      const lengths = digests.map((_, i) => manifestChunkLength(manifest, first + i));
      for await (const data of peer.fetchChunks(digests, lengths)) {
        const index = this.#verified;
        const digest = manifest.chunks[index]!;
        if (digestOf(data) !== digest) throw new IntegrityError(digest, peer.id);
        Counters.bump(this.#opts.counters.bytesFromPeer, peer.id, data.length);
        this.#writeBehind(index, digest, data);
        this.#verified = index + 1;
        this.#notify();
        while (this.#unwrittenBytes > WRITE_BEHIND_BYTES) await Promise.race(this.#writes);
        if (this.#writeError) throw this.#writeError;
      }
    }
  }

  #writeBehind(index: number, digest: string, data: Buffer): void {
    this.#unwritten.set(index, data);
    this.#unwrittenBytes += data.length;
    const write: Promise<void> = this.#opts.store
      .addVerifiedChunk(this.#lease, digest, data)
      .catch((error: unknown) => {
        this.#writeError ??= error instanceof Error ? error : new Error(String(error));
      })
      .finally(() => {
        this.#unwritten.delete(index);
        this.#unwrittenBytes -= data.length;
        this.#writes.delete(write);
      });
    this.#writes.add(write);
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = [];
    for (const resolve of wake) resolve();
  }

  #finish(error: Error | undefined): void {
    this.#error = error;
    this.#done = true;
    this.#notify();
    this.#maybeRelease();
  }

  #maybeRelease(): void {
    if (this.#done && this.#readers === 0) this.#lease.release();
  }
}
