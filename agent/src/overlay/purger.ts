import type { ControlPlane } from '../control/control-plane.ts';
import type { ObjectStore } from '../cache/object-store.ts';
import type { Tombstones } from '../cache/tombstones.ts';
import type { Logger } from '../telemetry/logger.ts';
import { type Clock, MAX_CLOCK_SKEW_MS } from '../time/clock.ts';
import { type NodeSignature, parseSignature } from '../cache/manifest.ts';
import type { PeerTransport } from '../transport/peer-transport.ts';

export interface PurgerOptions {
  store: ObjectStore;
  tombstones: Tombstones;
  control: ControlPlane;
  mesh: string;
  nodeId: string;
  clock: Clock;
  logger: Logger;
  /** `key`'s owners other than this node. */
  owners: (key: string) => PeerTransport[];
  /** Forgets any download or holder record of `key` (a download in flight must not publish it). */
  forget: (key: string) => void;
  timeoutMs: number;
  /** Hears a purge from the control plane that was not applied, and why (a counter). */
  onRefused?: (reason: 'future-purge' | 'unsigned-purge' | 'purge-failed') => void;
  /**
   * Signs this node's purges and checks others' (with mTLS): a purge is applied only with the
   * signature of the node of the mesh that accepted it.
   */
  signer?: {
    signPurge(key: string, purgedAtMs: number, by?: string): NodeSignature;
    verifyPurge(key: string, purgedAtMs: number, signature: NodeSignature | undefined): string;
  };
}

/** A purge no node of the mesh vouches for (unsigned, or badly signed): refused. */
export class UnsignedPurgeError extends Error {
  override name = 'UnsignedPurgeError';
}

/**
 * Mesh-wide DELETE. A purge leaves a tombstone (key and time) that makes every version created at or
 * before it dead while the tombstone is kept (Tombstones: 7 days, within a cap), so a node that was
 * away cannot bring it back: the store refuses to commit such a
 * version, owners answer reads with "purged", and a returning node that offers its stale copy for
 * replication is told to drop it. The purge goes out on the control plane (fast, to everyone) and to
 * the key's owners over gRPC (durable, also without NATS).
 */
/** A purge dated in the future: refused (counted by the caller). */
export class FuturePurgeError extends Error {
  override name = 'FuturePurgeError';
}

/** Purges applied here that are remembered with their answer (see Purger.#applied), at most. */
export const APPLIED_KEPT = 1024;

export class Purger {
  readonly #opts: PurgerOptions;
  /**
   * The last purge applied here of each key lately (its time, and whether this node had a version it
   * covered), oldest first. A purge reaches a key's owners twice, on the control plane and from its
   * node over gRPC, and whichever comes second finds nothing left: it answers what the first found,
   * or the DELETE that asked the owners would answer 404 for an object they held.
   */
  readonly #applied = new Map<string, { purgedAtMs: number; had: Promise<boolean>; pending: boolean }>();

  constructor(opts: PurgerOptions) {
    this.#opts = opts;
    opts.control.onEvent((event) => {
      if (event.type !== 'object.purge') return;
      const { key, purgedAtMs, signature } = event.body;
      // The signature is read as one from gRPC or the disk is: shape checked (a certificate that is
      // not plain base64 is no signature: the verifier's decoder would skip the stray characters,
      // and the tombstone would count one more signer) and its certificate shared.
      const proof = signature === undefined ? undefined : parseSignature(signature);
      // A purge that cannot be applied here (its tombstone not saved: a full or failing disk) is
      // logged; repair and the next purge get another chance. It must not take the agent down.
      this.purgeHere(key, purgedAtMs, proof).catch((error: unknown) => {
        opts.onRefused?.(
          error instanceof FuturePurgeError
            ? 'future-purge'
            : error instanceof UnsignedPurgeError
              ? 'unsigned-purge'
              : 'purge-failed',
        );
        opts.logger.warn({ key, err: (error as Error).message }, 'purge from the control plane not applied');
      });
    });
  }

  /**
   * Applies a purge on this node; whether it had a copy. A purge dated further in the future than
   * clocks can disagree (MAX_CLOCK_SKEW_MS) is refused: it would leave the key unwritable until then.
   * With a signer, so is a purge without a good signature of a node of the mesh; the signature is
   * kept with the tombstone, to be shown with every "purged" answer. Without one (security off),
   * nothing checks a signature, and none is kept: anyone could make each tombstone carry 8 KiB.
   *
   * `caller`: the node that sent it over gRPC (its certificate's identity), when it came that way.
   * Only the node that signed a purge sends it over gRPC (its DELETE asks the key's owners whether
   * they had it): any other caller has it applied all the same, but hears `false`, first delivery or
   * not, or a member replaying signed purges would learn whether this node held a key.
   */
  async purgeHere(
    key: string,
    purgedAtMs: number,
    signature?: NodeSignature,
    caller?: string,
  ): Promise<boolean> {
    if (!Number.isSafeInteger(purgedAtMs) || purgedAtMs > this.#opts.clock.now() + MAX_CLOCK_SKEW_MS)
      throw new FuturePurgeError(
        `a purge dated ${purgedAtMs} is in the future (now ${this.#opts.clock.now()})`,
      );
    let signedBy: string | undefined;
    if (this.#opts.signer) {
      try {
        signedBy = this.#opts.signer.verifyPurge(key, purgedAtMs, signature);
      } catch (error) {
        throw new UnsignedPurgeError((error as Error).message, { cause: error });
      }
    }
    const had = this.#purge(key, purgedAtMs, this.#opts.signer ? signature : undefined);
    return caller !== undefined && signedBy !== undefined && caller !== signedBy
      ? had.then(() => false)
      : had;
  }

  /** Applies a purge checked by purgeHere; whether this node had a version it covers. */
  #purge(key: string, purgedAtMs: number, signature: NodeSignature | undefined): Promise<boolean> {
    const applied = this.#applied.get(key);
    // Its answer stands while it is being applied, and after while its tombstone is kept (once the
    // tombstone has gone, a stale copy may have come back: applied again).
    if (
      applied?.purgedAtMs === purgedAtMs &&
      (applied.pending || (this.#opts.tombstones.purgedAt(key) ?? -1) >= purgedAtMs)
    )
      // Joined while it was applied: if that fails (a disk error), this delivery tries once itself.
      return applied.had.catch(() => this.#purge(key, purgedAtMs, signature));
    // Remembered only when it moves this node's tombstone of the key forward: an older purge (a
    // signed one replayed, say) is applied, finding nothing, without taking the memory of the key's
    // newer one or of other keys' (1,024 of them replayed would push out a fresh one). So is one
    // older than tombstones are kept (no tombstone is left of it).
    const recorded = this.#opts.tombstones.purgedAt(key);
    if (
      (recorded ?? -1) >= purgedAtMs ||
      (applied?.purgedAtMs ?? -1) > purgedAtMs ||
      !this.#opts.tombstones.keeps(purgedAtMs)
    )
      return this.#apply(key, purgedAtMs, signature);
    const had = this.#apply(key, purgedAtMs, signature);
    const entry = { purgedAtMs, had, pending: true };
    this.#applied.delete(key);
    this.#applied.set(key, entry);
    if (this.#applied.size > APPLIED_KEPT) this.#applied.delete(this.#applied.keys().next().value!);
    had.then(
      () => (entry.pending = false),
      // Not applied: forgotten, so that the next delivery of it tries again.
      () => this.#applied.get(key) === entry && this.#applied.delete(key),
    );
    return had;
  }

  async #apply(key: string, purgedAtMs: number, signature: NodeSignature | undefined): Promise<boolean> {
    // Read in before the tombstone is: while the store's index loads after a start, a key not
    // loaded yet is read from the database when first asked for, and a row the tombstone covers
    // would be removed unseen (the purge would say the object was not here).
    this.#opts.store.holds(key);
    await this.#opts.tombstones.record(key, purgedAtMs, signature);
    this.#opts.forget(key);
    // In the key's turn among its commits: a version whose manifest was being written, which a
    // lookup now would miss, lands first and is dropped; a commit after it sees the tombstone.
    return this.#opts.store.purge(key, purgedAtMs);
  }

  /**
   * DELETE: purges `key` here, on its owners and (via the control plane) everywhere, signed as asked
   * for by client `by`; whether any node had it.
   */
  async purgeEverywhere(key: string, by?: string): Promise<boolean> {
    const { clock, control, mesh, nodeId, logger } = this.#opts;
    const purgedAtMs = clock.now();
    const signature = this.#opts.signer?.signPurge(key, purgedAtMs, by);
    const here = await this.purgeHere(key, purgedAtMs, signature);
    control.publish({
      v: 1,
      type: 'object.purge',
      mesh,
      from: nodeId,
      sentAtMs: purgedAtMs,
      body: { key, purgedAtMs, ...(signature ? { signature } : {}) },
    });
    const owners = await Promise.all(
      this.#opts.owners(key).map((owner) =>
        owner
          .purge(key, purgedAtMs, signature, AbortSignal.timeout(this.#opts.timeoutMs))
          .catch((error: Error) => {
            logger.warn(
              { owner: owner.id, key, err: error.message },
              'purge not delivered to owner; it will learn on repair',
            );
            return false;
          }),
      ),
    );
    return here || owners.some(Boolean);
  }
}
