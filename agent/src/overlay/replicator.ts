import type { Manifest, NodeSignature } from '../cache/manifest.ts';
import type { ObjectStore } from '../cache/object-store.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { PeerTransport } from '../transport/peer-transport.ts';
import type { Holder } from '../domain.ts';
import { every } from '../time/every.ts';

/**
 * Replicate calls under way at once during a repair pass (a pool: the next starts as soon as one
 * ends). A call mostly waits (a round trip, then the owner's pull), so a returning owner's backlog
 * of hundreds of keys takes seconds, not the minute 4 calls in lockstep took in the chaos suite.
 */
const REPAIR_PARALLELISM = 16;
/**
 * Of which at most this many to one owner: an owner that is slow but alive (a copy may take the whole
 * replication timeout) holds only these, and copies to every other owner go on beside them.
 */
const REPAIR_PER_OWNER = 4;
/** Membership changes within this window cause one repair pass. */
const REPAIR_DEBOUNCE_MS = 200;
/** A pass that left copies unmade is run again after this, doubling up to the most (then steady). */
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30_000;
/** How often the copies under way check that the nodes copying are still counted alive (else cancelled). */
const ALIVE_CHECK_MS = 200;

export interface ReplicatorOptions {
  store: ObjectStore;
  /** `key`'s owners: whether this node is one, and the others' connections. */
  placementOf: (key: string) => { self: boolean; peers: PeerTransport[] };
  self: () => Holder | undefined;
  logger: Logger;
  /**
   * Applies a purge an owner reported (when it refused a copy, or answered "purged"), with the
   * signature it showed; rejects when the purge is not believed (it is then only logged).
   */
  onPurged: (key: string, purgedAtMs: number, signature: NodeSignature | undefined) => Promise<unknown>;
  /** Live nodes after `key`'s owners in placement order: stand-ins for owners that cannot copy. */
  standInsOf?: (key: string) => PeerTransport[];
  /** Whether membership still counts `peer` alive. */
  isAlive?: (peer: PeerTransport) => boolean;
  /** Resolves once this node's view of the mesh is formed (Overlay.untilJoined). */
  untilJoined?: () => Promise<unknown>;
  /** Copies (this one included) a PUT waits for. */
  writeCopies: number;
  timeoutMs: number;
  /**
   * Bytes of stand-in copies kept as owed (evicted last), at most (default: no bound; the agent gives
   * a quarter of its store). Past it, the member whose claims count the most bytes gives up its
   * oldest claim, and a stand-in nobody claims any more becomes a cached copy (evicted in turn): a
   * member asking for copies of keys whose owners then refuse them (itself, say) cannot pin the store
   * with them, nor push out what others asked for (see keepAsStandIn).
   */
  standInBytes?: number;
}

/**
 * What a stand-in copy counts for at least, of the stand-ins' share of the store: about what an
 * object's row in the store's index takes (its key, manifest and chunk list), so that copies of empty
 * objects cannot pin rows past the share.
 */
export const STAND_IN_MIN_BYTES = 512;

/**
 * Keeps R copies of every object on its owners. A PUT asks the owners to copy from the writer and
 * waits for `writeCopies` of them; when membership changes, each owner of a key asks the owners it
 * has not yet seen to copy it (repair). Owners pull over the ordinary verified download path, and one
 * that already has the version answers at once, so asking twice costs one round trip.
 */
export class Replicator {
  readonly #opts: ReplicatorOptions;
  /** The owners each key was last replicated to, by address. */
  readonly #replicatedTo = new Map<string, Set<string>>();
  /** Keys written here, or kept here as a stand-in: copied to their owners until each confirmed one. */
  readonly #written = new Set<string>();
  /** The stand-ins among them: their sizes and who asked (bounded by standInBytes). */
  readonly #standIns = new Map<string, { bytes: number; by: Set<string> }>();
  /** The stand-ins each member asked for, oldest first, and their bytes. */
  readonly #standInsBy = new Map<string, { keys: Set<string>; bytes: number }>();
  #standInBytes = 0;
  /**
   * Cached copies already checked against an owner for a purge this node may have missed: each is
   * checked once after start, and again after the control plane comes back (purges travel on it).
   */
  readonly #purgeChecked = new Set<string>();
  #repairTimer: NodeJS.Timeout | undefined;
  /**
   * Copies under way, by the node asked: cancelled once membership stops counting it alive. A call
   * to a member cut off by a partition would otherwise hold a repair worker for the whole replication
   * timeout (a minute), and the pass after the heal would wait behind it.
   */
  readonly #underWay = new Map<PeerTransport, Set<AbortController>>();
  #aliveWatch: NodeJS.Timeout | undefined;
  /** When the pending pass is due (performance.now()); undefined when none is pending. */
  #dueAt: number | undefined;
  /** A pass is queued behind the one running and has not started: another would repeat it. */
  #passQueued = false;
  #repairing: Promise<void> = Promise.resolve();
  #backlog = 0;
  /** Passes in a row that left copies unmade: the next retry waits 2^n times RETRY_FIRST_MS. */
  #failedPasses = 0;
  #closed = false;

  constructor(opts: ReplicatorOptions) {
    this.#opts = opts;
  }

  /**
   * Replicates a freshly stored object; resolves with the copies known to exist (this one included)
   * once `writeCopies` exist, or once nothing is left to try. Copies the PUT waits for are asked of
   * that many owners at a time, nearest placement first (so they do not share the writer's uplink
   * with copies nobody waits for); an owner that fails, or that membership stops counting alive
   * while it copies, is replaced by the next owner, then by the next live node in placement order
   * (a stand-in: it keeps the copy as owed, evicted last, and hands it on to the owners by repair).
   * The owners not needed for the answer get theirs after it. The writer sees to every owner's copy
   * (repair) until each has confirmed one. The whole wait is bounded by the replication timeout.
   */
  async afterPut(manifest: Manifest): Promise<number> {
    // A node that just started places on the owners it has met: a write that waits for copies
    // waits (within the join grace) until it has met the mesh, or it would find too few owners.
    // (Copies made in the background go to the owners it meets later, by repair.)
    if (this.#opts.writeCopies > 1) await this.#opts.untilJoined?.();
    const key = manifest.key;
    const { peers: owners } = this.#opts.placementOf(key);
    // Owed until every owner confirmed a copy, whatever the placement becomes meanwhile (outside
    // the stand-ins' share, should it have been one).
    this.#paid(key);
    this.#written.add(key);
    /**
     * The first node that confirmed a copy: the copies nobody waits for are made from it, not from
     * this node again (chain replication). A writer with a slow uplink sends the object once, not
     * once per owner, and its copies do not compete with the one its PUT waits for.
     */
    let relay: PeerTransport | undefined;
    const background = (peers: readonly PeerTransport[]) => {
      const source = relay && { nodeId: relay.id, grpc: relay.address };
      for (const peer of peers)
        this.#copyTo(peer, manifest, () => this.schedule(RETRY_FIRST_MS), source).catch(() => undefined);
    };
    const needed = Math.min(this.#opts.writeCopies - 1, owners.length);
    if (needed <= 0) {
      background(owners); // the rest goes on in the background
      return 1;
    }
    const candidates = [...owners, ...(this.#opts.standInsOf?.(key) ?? [])];
    return new Promise<number>((resolve) => {
      let confirmed = 0;
      let answered = false;
      /**
       * Copies under way. One to an owner that membership stops counting alive is cancelled within
       * ALIVE_CHECK_MS (#track), fails, and its place goes to the next candidate.
       */
      const counting = new Set<PeerTransport>();
      // However many owners are tried one after another, the PUT waits one timeout at most.
      const deadline = setTimeout(() => finish(), this.#opts.timeoutMs);
      deadline.unref();
      const finish = () => {
        if (answered) return;
        answered = true;
        clearTimeout(deadline);
        resolve(1 + confirmed);
        background(candidates.filter((c) => owners.includes(c))); // owners not yet asked
      };
      const next = () => {
        if (answered) return;
        if (confirmed >= needed) return finish();
        while (confirmed + counting.size < needed && candidates.length > 0) {
          const peer = candidates.shift()!;
          counting.add(peer);
          this.#copyTo(peer, manifest, () => owners.includes(peer) && this.schedule(RETRY_FIRST_MS))
            .catch(() => false)
            .then((ok) => {
              if (ok && !answered) confirmed++;
              if (ok) relay ??= peer;
              counting.delete(peer);
              next();
            })
            .catch(() => undefined);
        }
        if (counting.size === 0) finish(); // nothing under way, nobody left to ask
      };
      next();
    });
  }

  /** Copies (and purge checks) the running repair pass has still to make: 0 when none runs. */
  get backlog(): number {
    return this.#backlog;
  }

  /** Checks every cached copy for missed purges again (the control plane was away: purges travel on it). */
  recheckPurges(): void {
    this.#purgeChecked.clear();
    this.schedule();
  }

  /** Whether this node owes `key`'s owners copies: it wrote it, or keeps it as a stand-in, and some owner has none yet. */
  owesCopies(key: string): boolean {
    return this.#written.has(key);
  }

  /**
   * Takes a copy (`size` bytes) this node was asked to keep by member `by` though it is no owner (a
   * stand-in): owed to the owners. Every member that asked for a key claims it, and each claim counts
   * the key whole in that member's share; the key counts once against standInBytes. Past it, the
   * member whose share is the largest (`by` itself, when that is it) gives up its oldest claim, and a
   * key nobody claims any more becomes a cached copy: a member that asks for others' keys too, then
   * floods, gives up its own claims and leaves theirs. False for a copy larger than standInBytes (it
   * stays, as a cached one). A key asked for again (a new version, say) is counted anew at its size.
   * Each counts at least STAND_IN_MIN_BYTES: an empty object still takes its row in the store's index.
   */
  keepAsStandIn(key: string, size: number, by: string): boolean {
    const bytes = Math.max(size, STAND_IN_MIN_BYTES);
    const kept = this.#standIns.get(key);
    // Written here: owed, outside the stand-ins' share.
    if (!kept && this.#written.has(key)) return true;
    if (kept?.bytes === bytes) {
      // The same version asked for again (its root covers its size): one more claim on it.
      if (kept.by.has(by)) return true;
    } else {
      // New, or another version: the claims on the one it replaced go with it (a member cannot make
      // others' shares count a larger version), and it counts to `by` alone.
      if (kept) this.#paid(key);
      if (bytes > (this.#opts.standInBytes ?? Infinity)) return false;
      this.#written.add(key);
      this.#standIns.set(key, { bytes, by: new Set() });
      this.#standInBytes += bytes;
    }
    this.#claim(key, by);
    return this.#makeRoom(by, key);
  }

  /** Member `by` claims stand-in `key`: counted whole in its share. */
  #claim(key: string, by: string): void {
    const standIn = this.#standIns.get(key)!;
    standIn.by.add(by);
    let share = this.#standInsBy.get(by);
    if (!share) this.#standInsBy.set(by, (share = { keys: new Set(), bytes: 0 }));
    share.keys.add(key);
    share.bytes += standIn.bytes;
  }

  /** Back within standInBytes after `by` claimed `key`; whether `key` is still owed. */
  #makeRoom(by: string, key: string): boolean {
    const budget = this.#opts.standInBytes ?? Infinity;
    while (this.#standInBytes > budget) {
      // The largest share (`by`'s on a tie) gives up its oldest claim; a key nobody claims leaves.
      let largestBy = by;
      let largest = this.#standInsBy.get(by);
      for (const [member, share] of this.#standInsBy)
        if (!largest || share.bytes > largest.bytes) [largest, largestBy] = [share, member];
      if (!largest || largest.keys.size === 0) break; // (over the budget, some share holds a key)
      this.#giveUpOldest(largest, largestBy, key);
    }
    return this.#written.has(key);
  }

  /** Member `by` no longer claims stand-in `key`: it leaves when nobody does. */
  #unclaim(key: string, by: string): void {
    const standIn = this.#standIns.get(key)!;
    const share = this.#standInsBy.get(by)!;
    share.keys.delete(key);
    share.bytes -= standIn.bytes;
    if (share.keys.size === 0) this.#standInsBy.delete(by);
    standIn.by.delete(by);
    if (standIn.by.size === 0) {
      this.#standIns.delete(key);
      this.#standInBytes -= standIn.bytes;
      this.#written.delete(key);
    }
  }

  /** `by`'s oldest claim given up for room; the key kept as a cached copy when nobody claims it. */
  #giveUpOldest(share: { keys: Set<string> }, by: string, asked: string): void {
    const [oldest] = share.keys;
    this.#unclaim(oldest!, by);
    if (!this.#written.has(oldest!))
      this.#opts.logger.debug(
        { key: oldest, for: asked },
        'stand-in copy kept as a cached one: stand-ins fill their share of the store',
      );
  }

  /** `key` is owed no more (paid, or gone). */
  #paid(key: string): void {
    this.#written.delete(key);
    const standIn = this.#standIns.get(key);
    if (standIn === undefined) return;
    for (const by of [...standIn.by]) this.#unclaim(key, by);
  }

  /** Forgets `key` (removed from this node): its record would otherwise stay until a repair pass. */
  forgetKey(key: string): void {
    this.#replicatedTo.delete(key);
    this.#paid(key);
    this.#purgeChecked.delete(key);
  }

  /** Forgets that anything was copied to `address` (a member there restarted): repair asks again. */
  forget(address: string): void {
    for (const done of this.#replicatedTo.values()) done.delete(address);
  }

  /**
   * Membership changed (a member came, went or came back): the copies a failed pass left are worth
   * trying at once, not after the backoff earlier failures built up (up to 30 s).
   */
  membershipChanged(): void {
    this.#failedPasses = 0;
    this.schedule();
  }

  /**
   * Runs one repair pass within `delayMs` (coalescing bursts of membership changes and failures); a
   * pass that leaves copies unmade runs again after a backoff (0.5 s doubling to 30 s), whatever
   * membership does, until every key has its copies. A pass already due sooner stays as it is: a
   * steady stream of failures (each asking for a pass in 0.5 s) cannot put it off for ever.
   */
  schedule(delayMs = REPAIR_DEBOUNCE_MS): void {
    if (this.#closed) return;
    const dueAt = performance.now() + delayMs;
    if (this.#dueAt !== undefined && this.#dueAt <= dueAt) return;
    clearTimeout(this.#repairTimer);
    this.#dueAt = dueAt;
    this.#repairTimer = setTimeout(() => {
      this.#dueAt = undefined;
      // One pass waiting behind a long one is enough: it will see everything asked for meanwhile.
      if (this.#passQueued) return;
      this.#passQueued = true;
      // The chain itself never rejects: a failed pass is logged, and the next one runs all the same
      // (a rejected link would skip every later pass, and reject with nobody awaiting it).
      this.#repairing = this.#repairing
        .then(() => {
          this.#passQueued = false;
          return this.repair();
        })
        .catch((error: unknown) =>
          this.#opts.logger.warn(
            { err: (error as Error).message },
            'repair pass failed; the next one will retry',
          ),
        );
    }, delayMs);
    this.#repairTimer.unref();
  }

  /**
   * For every key this node owns and holds (or wrote and still owes): asks owners it has not
   * replicated to yet to copy it. Then, for cached copies not checked yet, asks an owner whether it
   * was purged meanwhile. Copies come first: they are what keeps R copies.
   */
  async repair(): Promise<void> {
    /** The pass's copies and purge checks, by the owner each goes to (a lane each). */
    const lanes = new Map<string, (() => Promise<unknown>)[]>();
    const add = (owner: PeerTransport, run: () => Promise<unknown>) => {
      const lane = lanes.get(owner.address) ?? [];
      lane.push(run);
      lanes.set(owner.address, lane);
    };
    const checks: [PeerTransport, () => Promise<unknown>][] = [];
    /** Copies that failed (an owner that did not answer, or refused): the pass runs again. */
    let unmade = 0;
    // After a start, every key held: the index loads in the background.
    await this.#opts.store.loaded();
    const keys = this.#opts.store.keys();
    const live = new Set(keys);
    for (const key of this.#replicatedTo.keys()) if (!live.has(key)) this.#replicatedTo.delete(key);
    for (const key of this.#written) if (!live.has(key)) this.#paid(key);
    for (const key of this.#purgeChecked) if (!live.has(key)) this.#purgeChecked.delete(key);
    // A manifest is read (store.peek, from the database) only for a copy or check about to run:
    // a pass over a million keys with nothing to do reads none.
    const store = this.#opts.store;
    for (const key of keys) {
      if (!store.holds(key)) continue;
      const placement = this.#opts.placementOf(key);
      const done = this.#replicatedTo.get(key);
      if (this.#written.has(key) && placement.peers.every((o) => done?.has(o.address))) this.#paid(key); // every owner has the copy this node owed
      if (!placement.self && !this.#written.has(key)) {
        // A cached copy: check (once) that it was not purged while this node was away.
        const owner = placement.peers[0];
        if (owner && !this.#purgeChecked.has(key))
          checks.push([
            owner,
            async () => {
              const manifest = store.peek(key);
              if (manifest && (await this.#checkPurged(owner, manifest))) this.#purgeChecked.add(key);
            },
          ]);
        continue;
      }
      for (const owner of placement.peers) {
        if (!done?.has(owner.address))
          add(owner, async () => {
            const manifest = store.peek(key);
            if (manifest) await this.#copyTo(owner, manifest, () => unmade++);
          });
      }
    }
    for (const [owner, run] of checks) add(owner, run);
    const total = [...lanes.values()].reduce((n, lane) => n + lane.length, 0);
    this.#backlog = total;
    // REPAIR_PARALLELISM slots in all, taken in turn (first come, first served) by up to
    // REPAIR_PER_OWNER workers per owner.
    let free = REPAIR_PARALLELISM;
    const waiting: (() => void)[] = [];
    const acquire = () =>
      free > 0 ? (free--, Promise.resolve()) : new Promise<void>((resolve) => waiting.push(resolve));
    const release = () => {
      const next = waiting.shift();
      if (next) next();
      else free++;
    };
    try {
      const worker = async (lane: (() => Promise<unknown>)[], cursor: { next: number }) => {
        while (cursor.next < lane.length) {
          const run = lane[cursor.next++]!;
          await acquire();
          await run().finally(() => {
            release();
            this.#backlog--;
          });
        }
      };
      await Promise.all(
        [...lanes.values()].flatMap((lane) => {
          const cursor = { next: 0 };
          return Array.from({ length: Math.min(REPAIR_PER_OWNER, lane.length) }, () => worker(lane, cursor));
        }),
      );
    } finally {
      this.#backlog = 0;
    }
    if (total > 0) this.#opts.logger.info({ copies: total, unmade }, 'repair pass finished');
    if (unmade === 0) this.#failedPasses = 0;
    else {
      const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.#failedPasses);
      this.#failedPasses = Math.min(this.#failedPasses + 1, 16);
      this.#opts.logger.info({ unmade, retryInMs: delay }, 'copies left unmade: repair runs again');
      this.schedule(delay);
    }
  }

  /** Asks `owner` whether the cached copy was purged (and applies it); true once the owner answered. */
  async #checkPurged(owner: PeerTransport, manifest: Manifest): Promise<boolean> {
    try {
      const answer = await owner.getManifest(manifest.key, AbortSignal.timeout(this.#opts.timeoutMs));
      if (answer?.purgedAtMs !== undefined && manifest.createdAtMs <= answer.purgedAtMs) {
        this.#opts.logger.info({ key: manifest.key, owner: owner.id }, 'cached copy was purged meanwhile');
        await this.#opts.onPurged(manifest.key, answer.purgedAtMs, answer.purgeSignature);
      }
      return true;
    } catch (error) {
      this.#opts.logger.debug({ key: manifest.key, err: (error as Error).message }, 'purge check failed');
      return false;
    }
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#repairTimer);
    clearInterval(this.#aliveWatch);
  }

  /** A cancel for a copy `owner` makes, pulled when membership stops counting it alive. */
  #track(owner: PeerTransport): AbortController {
    const controller = new AbortController();
    const calls = this.#underWay.get(owner) ?? new Set<AbortController>();
    calls.add(controller);
    this.#underWay.set(owner, calls);
    if (this.#opts.isAlive && this.#aliveWatch === undefined) {
      const isAlive = this.#opts.isAlive;
      this.#aliveWatch = every(
        ALIVE_CHECK_MS,
        () => {
          for (const [peer, under] of this.#underWay)
            if (!isAlive(peer))
              for (const c of under) c.abort(new Error(`${peer.id} is no longer counted alive`));
        },
        (error) => this.#opts.logger.error({ err: error.message }, 'replication: alive check failed'),
      );
    }
    return controller;
  }

  #untrack(owner: PeerTransport, controller: AbortController): void {
    const calls = this.#underWay.get(owner);
    calls?.delete(controller);
    if (calls?.size === 0) this.#underWay.delete(owner);
    if (this.#underWay.size === 0) {
      clearInterval(this.#aliveWatch);
      this.#aliveWatch = undefined;
    }
  }

  /** Asks `owner` to copy `manifest`'s object from `source` (by default this node). */
  async #copyTo(
    owner: PeerTransport,
    manifest: Manifest,
    onFailure?: () => void,
    source: Holder | undefined = this.#opts.self(),
  ): Promise<boolean> {
    if (!source) {
      onFailure?.();
      return false;
    }
    const controller = this.#track(owner);
    try {
      const { purgedAtMs, purgeSignature } = await owner.replicate(
        manifest,
        source,
        AbortSignal.any([AbortSignal.timeout(this.#opts.timeoutMs), controller.signal]),
      );
      if (purgedAtMs !== undefined) {
        // This copy outlived a purge (this node was away): drop it instead of spreading it.
        this.#opts.logger.info(
          { key: manifest.key, owner: owner.id, purgedAtMs },
          'owner says this object was purged',
        );
        await this.#opts.onPurged(manifest.key, purgedAtMs, purgeSignature);
        return false;
      }
      const done = this.#replicatedTo.get(manifest.key) ?? new Set<string>();
      done.add(owner.address);
      this.#replicatedTo.set(manifest.key, done);
      if (this.#written.has(manifest.key)) {
        const { peers } = this.#opts.placementOf(manifest.key);
        if (peers.every((o) => done.has(o.address))) this.#paid(manifest.key); // paid
      }
      return true;
    } catch (error) {
      this.#opts.logger.warn(
        { owner: owner.id, key: manifest.key, err: (error as Error).message },
        'replica not made',
      );
      onFailure?.();
      return false;
    } finally {
      this.#untrack(owner, controller);
    }
  }
}
