import { type CoordinationV1Api, type V1Lease, V1MicroTime } from '@kubernetes/client-node';
import type { Logger } from 'pino';

export interface LeaderOptions {
  api: CoordinationV1Api;
  namespace: string;
  name: string;
  /** This replica's identity (pod name). */
  identity: string;
  /** How long a lease holds without renewal (client-go's default 15 s). */
  leaseDurationMs?: number;
  /** A leader that cannot renew for this long steps down (10 s). */
  renewDeadlineMs?: number;
  /** How often to try to acquire or renew (2 s). */
  retryPeriodMs?: number;
  logger: Logger;
  onStartedLeading: () => void;
  /** The lease was lost (a process should then exit, as controller-runtime's managers do). */
  onStoppedLeading: () => void;
  now?: () => number;
}

const isConflict = (error: unknown) => (error as { code?: number }).code === 409;
const isNotFound = (error: unknown) => (error as { code?: number }).code === 404;

/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go does it: the holder renews every
 * retry period; others take over once they have seen the same renewal for a whole lease duration
 * (measured on their own clock, so clocks need not agree); every write is a compare-and-swap on
 * resourceVersion (409: someone else won). `release()` hands the lease back on shutdown, so a
 * successor need not wait for it to expire.
 */
export class LeaderElector {
  readonly #o: Required<Omit<LeaderOptions, 'now'>> & { now: () => number };
  #leading = false;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  /** The last lease seen, and when (our clock) it last changed. */
  #observed: { holder: string; renewTime: string; at: number } | undefined;
  #lastRenewed = 0;
  #inflight: Promise<void> | undefined;
  /** Counts lease attempts; an answer to an attempt that is not the latest is ignored. */
  #attempt = 0;
  #closing = false;

  constructor(opts: LeaderOptions) {
    this.#o = {
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      now: () => Date.now(),
      ...opts,
    };
  }

  get leading(): boolean {
    return this.#leading;
  }

  start(): void {
    this.#stopped = false;
    this.#tickLogged();
  }

  /** A tick nobody awaits: a failure (a throwing callback) is logged, never an unhandled rejection. */
  #tickLogged(): void {
    this.#tick().catch((error: unknown) =>
      this.#o.logger.error(
        { err: (error as Error).message, lease: this.#o.name },
        'leader election tick failed',
      ),
    );
  }

  async #tick(): Promise<void> {
    if (this.#stopped) return;
    const attempt = ++this.#attempt;
    let timer: NodeJS.Timeout | undefined;
    try {
      this.#inflight = this.#tryAcquireOrRenew(attempt);
      // Lease calls have no timeout of their own: one that hangs must not keep this replica
      // believing it leads while its lease runs out (two leaders). It is given up after the
      // renew deadline, and whatever it answers later is ignored (a stale attempt).
      await Promise.race([
        this.#inflight,
        new Promise<never>((_, reject) => {
          // A leader waits only as long as its renew deadline has left; anyone else the whole deadline.
          const wait = this.#leading
            ? Math.max(0, this.#lastRenewed + this.#o.renewDeadlineMs - this.#o.now())
            : this.#o.renewDeadlineMs;
          timer = setTimeout(() => {
            if (this.#attempt === attempt) this.#attempt++;
            reject(new Error(`no answer to a lease call in ${wait} ms`));
          }, wait);
        }),
      ]);
    } catch (error) {
      if (!isConflict(error))
        this.#o.logger.warn({ err: (error as Error).message, lease: this.#o.name }, 'lease update failed');
    } finally {
      clearTimeout(timer);
    }
    if (this.#stopped) return; // release() owns the lease from here
    try {
      if (this.#leading && this.#o.now() - this.#lastRenewed > this.#o.renewDeadlineMs) {
        this.#leading = false;
        this.#o.logger.error({ lease: this.#o.name }, 'could not renew the lease in time; stepping down');
        this.#o.onStoppedLeading();
      }
    } finally {
      // The next tick comes whatever the callback did (a throw is logged by #tickLogged).
      if (!this.#stopped) {
        this.#timer = setTimeout(() => this.#tickLogged(), this.#o.retryPeriodMs);
        this.#timer.unref();
      }
    }
  }

  async #tryAcquireOrRenew(attempt: number): Promise<void> {
    const { api, namespace, name, identity } = this.#o;
    const now = this.#o.now();
    const stamp = new V1MicroTime(now);
    const durationSeconds = Math.ceil(this.#o.leaseDurationMs / 1000);
    let lease: V1Lease;
    try {
      lease = await api.readNamespacedLease({ name, namespace });
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await api.createNamespacedLease({
        namespace,
        body: {
          metadata: { name, namespace },
          spec: {
            holderIdentity: identity,
            leaseDurationSeconds: durationSeconds,
            acquireTime: stamp,
            renewTime: stamp,
            leaseTransitions: 0,
          },
        },
      });
      this.#became(now, attempt);
      return;
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const renewTime = spec.renewTime ? new Date(spec.renewTime).toISOString() : '';
    // A renewal is dated from when its answer came, as client-go does: dated from before a slow read,
    // it would look older than it is, and a standby could take over from a leader still renewing.
    const seenAt = this.#o.now();
    if (!this.#observed || this.#observed.holder !== holder || this.#observed.renewTime !== renewTime) {
      this.#observed = { holder, renewTime, at: seenAt };
    }
    const expired =
      holder === '' || seenAt - this.#observed.at > (spec.leaseDurationSeconds ?? durationSeconds) * 1000;
    if (holder !== identity && !expired) {
      if (this.#leading && attempt === this.#attempt) {
        this.#leading = false;
        this.#o.onStoppedLeading();
      }
      return;
    }
    const taking = holder !== identity;
    await api.replaceNamespacedLease({
      name,
      namespace,
      body: {
        ...lease,
        spec: {
          ...spec,
          holderIdentity: identity,
          leaseDurationSeconds: durationSeconds,
          renewTime: stamp,
          ...(taking ? { acquireTime: stamp, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
        },
      },
    });
    this.#became(now, attempt);
  }

  #became(now: number, attempt: number): void {
    if (attempt !== this.#attempt) return; // an answer that came after its attempt was given up
    this.#lastRenewed = now;
    if (this.#leading) return;
    this.#leading = true;
    // Won while shutting down (by a write in flight when release() began, or during the drain):
    // release() gives it back; nothing starts.
    if (this.#stopped || this.#closing) return;
    this.#o.logger.info({ lease: this.#o.name, identity: this.#o.identity }, 'became the leader');
    this.#o.onStartedLeading();
  }

  /**
   * The replica is shutting down: it keeps renewing a lease it holds (its work is draining) but no
   * longer starts leading if it wins one. release() follows.
   */
  close(): void {
    this.#closing = true;
  }

  /** Stops renewing; if leading, gives the lease up so another replica can take it at once. */
  async release(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    // A renewal still in flight would change the Lease under this release (a 409) or win it back
    // after it: let it land first, but wait no longer than a renewal may take.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#inflight?.catch(() => undefined),
      new Promise((resolve) => (timer = setTimeout(resolve, this.#o.renewDeadlineMs))),
    ]);
    clearTimeout(timer);
    if (!this.#leading) return;
    this.#leading = false;
    const { api, namespace, name } = this.#o;
    try {
      const lease = await api.readNamespacedLease({ name, namespace });
      if (lease.spec?.holderIdentity !== this.#o.identity) return;
      await api.replaceNamespacedLease({
        name,
        namespace,
        body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1 } },
      });
    } catch (error) {
      this.#o.logger.warn({ err: (error as Error).message }, 'could not release the lease');
    }
  }
}
