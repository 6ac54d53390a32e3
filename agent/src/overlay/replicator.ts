import type { Manifest, NodeSignature } from '../cache/manifest.ts';
import type { ObjectStore } from '../cache/object-store.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { PeerTransport } from '../transport/peer-transport.ts';
import type { Holder } from './holder-index.ts';

/** Replicate calls run at once during a repair pass. */
const REPAIR_PARALLELISM = 4;
/** Membership changes within this window cause one repair pass. */
const REPAIR_DEBOUNCE_MS = 200;
/** A pass that left copies unmade is run again after this, doubling up to the most (then steady). */
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30_000;

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
  /** Copies (this one included) a PUT waits for. */
  writeCopies: number;
  timeoutMs: number;
}

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
  #repairTimer: NodeJS.Timeout | undefined;
  #repairing: Promise<void> = Promise.resolve();
  #backlog = 0;
  /** Passes in a row that left copies unmade: the next retry waits 2^n times RETRY_FIRST_MS. */
  #failedPasses = 0;
  #closed = false;

  constructor(opts: ReplicatorOptions) {
    this.#opts = opts;
  }

  /** Replicates a freshly stored object; resolves with the copies known to exist (this one included). */
  async afterPut(manifest: Manifest): Promise<number> {
    const { peers } = this.#opts.placementOf(manifest.key);
    const needed = Math.min(this.#opts.writeCopies - 1, peers.length);
    const results = peers.map((owner) => this.#copyTo(owner, manifest));
    if (needed <= 0) return 1; // the rest goes on in the background
    return new Promise<number>((resolve) => {
      let confirmed = 0;
      let settled = 0;
      for (const result of results) {
        // A copy that failed outright counts as not made (it must still settle, or a PUT would wait forever).
        result
          .catch(() => false)
          .then((ok) => {
            settled++;
            if (ok) confirmed++;
            if (confirmed >= needed || settled === results.length) resolve(1 + confirmed);
          })
          .catch(() => undefined);
      }
    });
  }

  /** Copies (and purge checks) the running repair pass has still to make: 0 when none runs. */
  get backlog(): number {
    return this.#backlog;
  }

  /** Forgets `key` (removed from this node): its record would otherwise stay until a repair pass. */
  forgetKey(key: string): void {
    this.#replicatedTo.delete(key);
  }

  /** Forgets that anything was copied to `address` (a member there restarted): repair asks again. */
  forget(address: string): void {
    for (const done of this.#replicatedTo.values()) done.delete(address);
  }

  /**
   * Runs one repair pass soon (coalescing bursts of membership changes); a pass that leaves copies
   * unmade runs again after a backoff (0.5 s doubling to 30 s), whatever membership does, until
   * every key has its copies.
   */
  schedule(delayMs = REPAIR_DEBOUNCE_MS): void {
    if (this.#closed) return;
    clearTimeout(this.#repairTimer);
    this.#repairTimer = setTimeout(() => {
      // The chain itself never rejects: a failed pass is logged, and the next one runs all the same
      // (a rejected link would skip every later pass, and reject with nobody awaiting it).
      this.#repairing = this.#repairing
        .then(() => this.repair())
        .catch((error: unknown) =>
          this.#opts.logger.warn(
            { err: (error as Error).message },
            'repair pass failed; the next one will retry',
          ),
        );
    }, delayMs);
    this.#repairTimer.unref();
  }

  /** For every key this node owns and holds: asks owners it has not replicated to yet to copy it. */
  async repair(): Promise<void> {
    const work: (() => Promise<unknown>)[] = [];
    /** Copies that failed (an owner that did not answer, or refused): the pass runs again. */
    let unmade = 0;
    const keys = this.#opts.store.keys();
    const live = new Set(keys);
    for (const key of this.#replicatedTo.keys()) if (!live.has(key)) this.#replicatedTo.delete(key);
    for (const key of keys) {
      const manifest = this.#opts.store.lookup(key);
      const placement = this.#opts.placementOf(key);
      if (!manifest) continue;
      if (!placement.self) {
        // A cached copy: check it was not purged while this node was away.
        const owner = placement.peers[0];
        if (owner) work.push(() => this.#checkPurged(owner, manifest));
        continue;
      }
      const done = this.#replicatedTo.get(key);
      for (const owner of placement.peers) {
        if (!done?.has(owner.address)) work.push(() => this.#copyTo(owner, manifest, () => unmade++));
      }
    }
    this.#backlog = work.length;
    try {
      for (let i = 0; i < work.length; i += REPAIR_PARALLELISM) {
        await Promise.all(
          work.slice(i, i + REPAIR_PARALLELISM).map((run) => run().finally(() => this.#backlog--)),
        );
      }
    } finally {
      this.#backlog = 0;
    }
    if (work.length > 0) this.#opts.logger.info({ copies: work.length, unmade }, 'repair pass finished');
    if (unmade === 0) this.#failedPasses = 0;
    else {
      const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.#failedPasses);
      this.#failedPasses = Math.min(this.#failedPasses + 1, 16);
      this.#opts.logger.info({ unmade, retryInMs: delay }, 'copies left unmade: repair runs again');
      this.schedule(delay);
    }
  }

  async #checkPurged(owner: PeerTransport, manifest: Manifest): Promise<void> {
    try {
      const answer = await owner.getManifest(manifest.key, AbortSignal.timeout(this.#opts.timeoutMs));
      if (answer?.purgedAtMs !== undefined && manifest.createdAtMs <= answer.purgedAtMs) {
        this.#opts.logger.info({ key: manifest.key, owner: owner.id }, 'cached copy was purged meanwhile');
        await this.#opts.onPurged(manifest.key, answer.purgedAtMs, answer.purgeSignature);
      }
    } catch (error) {
      this.#opts.logger.debug({ key: manifest.key, err: (error as Error).message }, 'purge check failed');
    }
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#repairTimer);
  }

  async #copyTo(owner: PeerTransport, manifest: Manifest, onFailure?: () => void): Promise<boolean> {
    const self = this.#opts.self();
    if (!self) {
      onFailure?.();
      return false;
    }
    try {
      const { purgedAtMs, purgeSignature } = await owner.replicate(
        manifest,
        self,
        AbortSignal.timeout(this.#opts.timeoutMs),
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
      return true;
    } catch (error) {
      this.#opts.logger.warn(
        { owner: owner.id, key: manifest.key, err: (error as Error).message },
        'replica not made',
      );
      onFailure?.();
      return false;
    }
  }
}
