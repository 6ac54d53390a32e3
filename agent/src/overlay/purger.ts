import type { ControlPlane } from '../control/control-plane.ts';
import type { ObjectStore } from '../cache/object-store.ts';
import type { Tombstones } from '../cache/tombstones.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { Clock } from '../time/clock.ts';
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
}

/**
 * Mesh-wide DELETE. A purge leaves a tombstone (key and time) that makes every version created before
 * it dead for good, so a node that was away cannot bring it back: the store refuses to commit such a
 * version, owners answer reads with "purged", and a returning node that offers its stale copy for
 * replication is told to drop it. The purge goes out on the control plane (fast, to everyone) and to
 * the key's owners over gRPC (durable, also without NATS).
 */
/** How far ahead of this node's clock another node's may be (a purge's time, checked on receipt). */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;

/** A purge dated in the future: refused (counted by the caller). */
export class FuturePurgeError extends Error {
  override name = 'FuturePurgeError';
}

export class Purger {
  readonly #opts: PurgerOptions;

  constructor(opts: PurgerOptions) {
    this.#opts = opts;
    opts.control.onEvent((event) => {
      if (event.type !== 'object.purge') return;
      const { key, purgedAtMs } = event.body;
      // A purge that cannot be applied here (its tombstone not saved: a full or failing disk) is
      // logged; repair and the next purge get another chance. It must not take the agent down.
      this.purgeHere(key, purgedAtMs).catch((error: unknown) =>
        opts.logger.warn({ key, err: (error as Error).message }, 'purge from the control plane not applied'),
      );
    });
  }

  /**
   * Applies a purge on this node; whether it had a copy. A purge dated further in the future than
   * clocks can disagree (MAX_CLOCK_SKEW_MS) is refused: it would leave the key unwritable until then.
   */
  async purgeHere(key: string, purgedAtMs: number): Promise<boolean> {
    if (!Number.isSafeInteger(purgedAtMs) || purgedAtMs > this.#opts.clock.now() + MAX_CLOCK_SKEW_MS)
      throw new FuturePurgeError(
        `a purge dated ${purgedAtMs} is in the future (now ${this.#opts.clock.now()})`,
      );
    await this.#opts.tombstones.record(key, purgedAtMs);
    this.#opts.forget(key);
    const local = this.#opts.store.lookup(key);
    if (!local || local.createdAtMs > purgedAtMs) return false;
    return this.#opts.store.delete(key);
  }

  /** DELETE: purges `key` here, on its owners and (via the control plane) everywhere; whether any node had it. */
  async purgeEverywhere(key: string): Promise<boolean> {
    const { clock, control, mesh, nodeId, logger } = this.#opts;
    const purgedAtMs = clock.now();
    const here = await this.purgeHere(key, purgedAtMs);
    control.publish({
      v: 1,
      type: 'object.purge',
      mesh,
      from: nodeId,
      sentAtMs: purgedAtMs,
      body: { key, purgedAtMs },
    });
    const owners = await Promise.all(
      this.#opts.owners(key).map((owner) =>
        owner.purge(key, purgedAtMs, AbortSignal.timeout(this.#opts.timeoutMs)).catch((error: Error) => {
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
