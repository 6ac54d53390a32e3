import type { Manifest, NodeSignature } from '../cache/manifest.ts';
import { parseManifest } from '../cache/manifest.ts';
import { ObjectPurgedError } from '../cache/errors.ts';
import { isKey } from '../keys.ts';
import { tracer } from '../telemetry/tracing.ts';
import { TokenBucket } from '../time/token-bucket.ts';
import type { PeerTransport } from '../transport/peer-transport.ts';
import { ManifestTrustError, StaleSignerError } from '../security/node-signer.ts';
import type { ChunkSource } from './chunk-source.ts';
import { Download, type DownloadOptions, type Located, PeerFetchError } from './download.ts';
import { MAX_DOWNLOADS, TooManyFetchesError } from './fetch-limits.ts';
import { headOf } from './swarm.ts';
import { chooseVersion, type VersionAnswer } from './vote.ts';

export interface PeerFetcherOptions extends DownloadOptions {
  peers: () => readonly PeerTransport[];
  /** Resolves once this node's view of the mesh is formed; true when it had to wait (Overlay.untilJoined). */
  untilJoined?: () => Promise<boolean>;
  /** Tries now the members that do not count alive; true when one is alive then (Overlay.reviveNow). */
  reviveNow?: () => Promise<boolean>;
  /** The peers that own `key` by placement: asked first, as they know of it if anyone does. */
  owners?: (key: string) => readonly PeerTransport[];
  /** Orders holders cheapest first (same zone, same region, then by RTT and load). */
  rank?: (holders: readonly PeerTransport[]) => PeerTransport[];
  /**
   * When this node's tombstone of `key` says it was purged: a version created then or before is
   * not fetched, whoever offers it (a node that was away, say, before it hears of the purge).
   */
  purgedAt?: (key: string) => number | undefined;
  /** Checks the signature behind a peer's "purged" answer; throws when it is not believed (the answer is then ignored). */
  verifyPurge?: (key: string, purgedAtMs: number, signature: NodeSignature | undefined) => void;
  /** Downloads started by reads under way at once, at most (default MAX_DOWNLOADS); past it a read needing another is refused. */
  maxDownloads?: number;
  /** Asks of every member (a key its owners know nothing of) per second, at most (default MAX_FANOUTS_PER_S). */
  maxFanoutsPerSecond?: number;
  /** The clock of that bound (default performance.now). */
  now?: () => number;
}

/**
 * How many times a second, at most, a node asks every member for a key all its owners answered they
 * know nothing of (in bursts of as many). Owners know of every copy (Holds), so a read rarely needs
 * it; a client asking for random keys would otherwise have each miss cost a call to every node of
 * the mesh. Past the bound the owners' answer stands (nothing found: the origin rule, or 404). When
 * an owner could not answer (a fault: down, cut off) or none is alive, everyone is asked regardless.
 */
export const MAX_FANOUTS_PER_S = 20;

/**
 * Gets objects this agent lacks from peers that hold them. One download per key at a time: later
 * readers join the download in progress. Every chunk is hashed before it is stored or handed to a
 * reader; a chunk that fails is blamed on the peer that sent it (counter and log), and the download
 * carries on from the same chunk with the next holder. At most `maxDownloads` that clients' reads
 * started run at once: a download goes on when its readers leave (what it fetched is kept), so past
 * that bound a read needing a download of another key is refused (TooManyFetchesError), not started.
 */
export class PeerFetcher {
  readonly #opts: PeerFetcherOptions;
  readonly #inflight = new Map<string, Download>();
  /** The downloads in #inflight that a client's read started (at most maxDownloads). */
  readonly #forReaders = new Set<Download>();

  /** The fan-out budget (a token bucket of MAX_FANOUTS_PER_S). */
  #fanouts: TokenBucket | undefined;

  constructor(opts: PeerFetcherOptions) {
    this.#opts = opts;
  }

  #mayFanOut(): boolean {
    const now = this.#opts.now ? this.#opts.now() : performance.now();
    this.#fanouts ??= new TokenBucket(this.#opts.maxFanoutsPerSecond ?? MAX_FANOUTS_PER_S, now);
    if (this.#fanouts.take(now)) return true;
    this.#opts.counters.fanoutsSkipped++;
    return false;
  }

  /**
   * Finds who holds `key`: asks its owners (one hop: they hold it or know who does), and everyone
   * else only when no owner knows it. The newest version whose manifest verifies wins (vote.ts:
   * holders named in answers do not outvote it); holders come cheapest first.
   */
  async locate(key: string): Promise<Located | undefined> {
    const inflight = this.#inflight.get(key);
    if (inflight) return inflight.located;
    return tracer().startActiveSpan(
      'edgemesh.locate',
      { attributes: { 'edgemesh.key': key } },
      async (span) => {
        try {
          let found = await this.#locate(key);
          // Found nowhere while this node is still meeting the mesh (it just started): asked again
          // once it has, rather than answering "no such object" for what its peers hold.
          if (!found && (await this.#opts.untilJoined?.())) found = await this.#locate(key);
          // Nobody alive has it, but a member counted dead may, and may be back since a moment (a
          // partition just healed: the periodic retry comes up to a period later). Asked again if
          // one of them answers now.
          if (!found && (await this.#opts.reviveNow?.())) found = await this.#locate(key);
          span.setAttribute('edgemesh.holders', found?.holders.length ?? 0);
          return found;
        } finally {
          span.end();
        }
      },
    );
  }

  async #locate(key: string): Promise<Located | undefined> {
    const owners = this.#opts.owners?.(key) ?? [];
    const isOwner = new Set(owners.map((o) => o.address));
    const others = this.#opts.peers().filter((p) => !isOwner.has(p.address));
    const tally = { failed: 0 };
    const fromOwners = await this.#ask(key, owners, tally);
    // Owners that all answered, and knew nothing: everyone is asked within a budget. Owners that
    // could not answer (down, cut off, none alive): everyone is asked, as a fault needs.
    const everyone = () =>
      others.length > 0 && (owners.length === 0 || tally.failed > 0 || this.#mayFanOut());
    const found = fromOwners ?? (everyone() ? await this.#ask(key, others) : undefined);
    if (!found || found === 'purged') return undefined; // purged: a stale copy elsewhere must not answer
    return { ...found, holders: this.#opts.rank?.(found.holders) ?? found.holders };
  }

  /** What `peers` know of `key`: the newest verified version, 'purged', or undefined for nothing. */
  async #ask(
    key: string,
    peers: readonly PeerTransport[],
    tally?: { failed: number },
    covered?: Manifest[],
  ): Promise<Located | 'purged' | undefined> {
    if (peers.length === 0) return undefined;
    const signal = AbortSignal.timeout(this.#opts.timeoutMs);
    const answers = await Promise.all(
      peers.map(async (peer): Promise<VersionAnswer<PeerTransport> | undefined> => {
        try {
          const answer = await peer.getManifest(key, signal);
          if (answer === undefined) return undefined;
          if (answer.purgedAtMs !== undefined) {
            this.#opts.verifyPurge?.(key, answer.purgedAtMs, answer.purgeSignature);
            return { kind: 'purged', purgedAtMs: answer.purgedAtMs };
          }
          const manifest = parseManifest(answer.manifest, isKey);
          if (manifest.key !== key) throw new Error(`answered for another key ${manifest.key}`);
          this.#opts.verify?.(manifest);
          const named = answer.holders.flatMap((holder) => this.#opts.resolve?.(holder) ?? []);
          return { kind: 'found', peer, manifest, holds: answer.holds, named };
        } catch (error) {
          if (tally) tally.failed++;
          // A lie the holder could have seen (tampered, unsigned, forged) costs it more than a call that
          // failed. A signer this node no longer trusts (StaleSignerError) costs it nothing: an honest
          // holder stored that before, and owners are asked at every lookup, whatever their score, so
          // even -1 an answer would have them distrusted after a CA replacement.
          if (!(error instanceof StaleSignerError))
            this.#opts.onOutcome?.(peer, error instanceof ManifestTrustError ? 'bad-manifest' : 'failed');
          this.#opts.logger.warn(
            { peer: peer.id, key, err: (error as Error).message },
            'peer gave no usable manifest',
          );
          return undefined;
        }
      }),
    );
    // A version this node's own tombstone covers is not fetched, whoever offers it (a node back
    // from away, before it hears of the purge): its offer counts as none.
    const purgedHere = this.#opts.purgedAt?.(key);
    const best = chooseVersion(
      purgedHere === undefined
        ? answers
        : answers.map((answer) => {
            if (answer?.kind !== 'found' || answer.manifest.createdAtMs > purgedHere) return answer;
            covered?.push(answer.manifest);
            return undefined;
          }),
    );
    if (best === undefined || best === 'purged') return best;
    return { head: headOf(best.manifest), manifest: best.manifest, holders: best.holders };
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

  /**
   * A reader of `located`'s chunks, downloading them (or joining the download in progress).
   * TooManyFetchesError when a download would have to start and `maxDownloads` are under way.
   */
  open(located: Located): ChunkSource {
    return this.#download(located, true).reader();
  }

  /**
   * Copies version `root` of `key` from `sources` into the store, resolving once it is committed
   * (at once if the store has it already). Rejects when no source has that version or the copy fails.
   */
  async copy(key: string, root: string, sources: readonly PeerTransport[]): Promise<void> {
    if (this.#opts.store.lookup(key)?.root === root) return;
    const covered: Manifest[] = [];
    const found = await this.#ask(key, sources, undefined, covered);
    const purgedAtMs = this.#opts.purgedAt?.(key);
    // The version asked for is one this node's tombstone covers: the caller hears so (and drops it).
    if (purgedAtMs !== undefined && covered.some((manifest) => manifest.root === root))
      throw new ObjectPurgedError(key, purgedAtMs);
    if (!found || found === 'purged' || found.manifest?.root !== root)
      throw new PeerFetchError(key, ['the source does not hold that version']);
    // Copied while the source was asked (the write path's Replicate and repair's for one version
    // race after a membership change): that download has ended, and a new one would fetch the same
    // bytes again and store the version over itself.
    if (this.#opts.store.lookup(key)?.root === root) return;
    await this.#download(found).stored;
    if (this.#opts.store.lookup(key)?.root !== root)
      throw new PeerFetchError(key, ['deleted or replaced while copying']);
  }

  /**
   * The download of `located`, started or joined. `forReader`: started by a client's read, so bounded
   * by `maxDownloads` (copies asked for by replication and repair are bounded per caller where they
   * are asked for: peer-server.ts, REPLICATE_PER_CALLER).
   */
  #download(located: Located, forReader = false): Download {
    const key = located.head.key;
    let download = this.#inflight.get(key);
    const root = located.manifest?.root;
    if (!download || (root !== undefined && download.root !== undefined && download.root !== root)) {
      const max = this.#opts.maxDownloads ?? MAX_DOWNLOADS;
      if (forReader && this.#forReaders.size >= max)
        throw new TooManyFetchesError(`${max} downloads are under way here; ${key} is not started now`);
      download = new Download(located, this.#opts);
      this.#inflight.set(key, download);
      const started = download;
      if (forReader) this.#forReaders.add(started);
      // Its failure is its waiters' to handle; here it only leaves the in-flight tables.
      started.finished
        .finally(() => {
          if (this.#inflight.get(key) === started) this.#inflight.delete(key);
          this.#forReaders.delete(started);
        })
        .catch(() => undefined);
    }
    return download;
  }
}
