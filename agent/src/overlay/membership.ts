import type { ControlEvent, MemberInfo } from '@edgemesh/contracts';
import type { ControlPlane } from '../control/control-plane.ts';
import type { Logger } from '../telemetry/logger.ts';
import { type Clock, MAX_CLOCK_SKEW_MS } from '../time/clock.ts';
import type { PeerTransport, PingResult } from '../transport/peer-transport.ts';
import { FOLLOW_AHEAD_S } from './life.ts';
import type { Vivaldi } from './vivaldi.ts';
import { every } from '../time/every.ts';

/**
 * unconfirmed: heard of, never answered a probe. alive: answered. suspect: stopped answering, directly
 * and through others. dead: suspect for longer than the suspicion timeout, or left.
 */
export type MemberState = 'unconfirmed' | 'alive' | 'suspect' | 'dead';

export interface MembershipTiming {
  /** How often one member is probed (plus every suspect). */
  probeIntervalMs: number;
  /** How long a probe waits for an answer. */
  probeTimeoutMs: number;
  /** How many other members are asked to probe one that does not answer. */
  indirectProbes: number;
  /** How long a member stays suspect before it is dead. */
  suspicionTimeoutMs: number;
  /** How often this node announces itself. */
  announceIntervalMs: number;
  /** How long dead members are remembered (so stale announcements do not revive them). */
  deadRetentionMs: number;
}

/**
 * At most this many members not yet confirmed by a probe: announcements beyond it are ignored, so a
 * flood of forged ones cannot make this node open connections without end. Only members themselves
 * take these places (learn refuses what a member says of another), so filling them takes as many
 * node identities as places (with mTLS an announcement is signed by the member it names).
 */
export const MAX_UNCONFIRMED = 256;
/** Announced members not yet confirmed that are probed each protocol period. */
const UNCONFIRMED_PROBES_PER_TICK = 4;
/**
 * Dead members tried again each protocol period, each on a fresh connection (the old one may sit in
 * a reconnect backoff, or on a TCP connection a partition left half open): a member back from a
 * partition is alive again within a period or two, not at its next announcement. Only its own
 * direct answer over mTLS revives it; a member that stays silent is forgotten after deadRetentionMs.
 */
const DEAD_RETRIES_PER_TICK = 4;
/**
 * How long a try to revive a dead member waits for the answer on its fresh connection. Before the
 * ping come a TCP handshake, a TLS handshake (certificates checked on both sides) and HTTP/2's
 * preface: four round trips or more, each behind whatever queues on the path just after a heal
 * (the repairs it sets off). In the chaos lab (40 ms round trips) that took 0.4-1.5 s, against the
 * 0.5 s probe timeout tries used to wait: every try failed, and members came back only through
 * announcements, 3-11 s after the heal. And a SYN the partition dropped is sent again 1 s later
 * (Linux's first retransmission timeout), so a try begun in the second before a heal answers soon
 * after it. Tries overlap (one each REVIVE_EVERY_MS at most), so a long wait holds nothing back.
 */
export const REVIVE_TIMEOUT_MS = 2500;
/**
 * Tries to revive members that misses asked for (reviveNow) under way at most, all members together
 * (each holds a connection for up to REVIVE_TIMEOUT_MS): beyond it, a miss joins the tries under way
 * instead of starting more. Misses in a burst while a large region is cut off would otherwise open
 * thousands of connections. The periodic tries are not counted: they are bounded by the period
 * (DEAD_RETRIES_PER_TICK members each), and misses aimed at members that stay cut off must not keep
 * a member that healed from being tried.
 */
export const MAX_REVIVE_TRIES = 64;
/** Tries of one member under way at most, periodic and asked for together. */
export const MAX_TRIES_PER_MEMBER = 6;
/**
 * An incarnation is a life and a count of refutations: a member starts at its start second times
 * this, and adds one each time it refutes a suspicion (at most one a probe period). A higher million
 * is a new life (it restarted: its disk may be new, so what was copied to it is asked again); a higher
 * number within the same million is only "I am alive" (nothing to copy again). Start seconds times a
 * million stay exact integers (below 2^53) until the year 2255.
 */
export const REFUTATIONS_PER_LIFE = 1_000_000;
const lifeOf = (incarnation: number) => Math.floor(incarnation / REFUTATIONS_PER_LIFE);
/**
 * How often, at most, this node asks a member again for everything it copied there (onRestarted),
 * and lets a confirmed member move to another address (copies are recorded by address, so a move
 * costs the same). A claim costs a member nothing: one that claimed a new life in every ping answer,
 * or flipped between two addresses, would have every peer re-send it what it owns each probe period.
 * A new life inside the window is taken at once for all else (fresh connection, announcement); the
 * re-copy is owed and made when the window ends (tick). A move inside it waits for the member's next
 * announcement after it.
 */
export const NEW_LIFE_MIN_INTERVAL_MS = 10_000;

/** Members one reviveNow call tries at most (in turn: the next call takes the next ones). */
const REVIVE_AT_ONCE = 8;
/**
 * How long a caller of reviveNow waits for its tries at most: a member back from a partition answers
 * a fresh connection's ping in a few round trips; one that does not is left to the periodic retry.
 */
const REVIVE_WAIT_MS = 250;
/**
 * A miss (reviveNow) starts a try of a dead member at most this often, each on a fresh connection
 * of its own; misses in between join the latest one a miss began. A try begun before a partition
 * healed (a miss's or the period's) may answer only at its SYN's next retransmission (1 s, then 3 s
 * after it began), so a later miss does not join a periodic try, and the next try does not wait.
 */
export const REVIVE_EVERY_MS = 250;
/** How long a member's replaced connection stays open for the calls already on it. */
const RETIRE_MS = 5000;
/**
 * A member's claims (a new life, a revival, a refutation) give it a fresh connection and this node's
 * announcement at most this often. A claim costs its sender nothing: lives claimed ahead of time (up
 * to the clock skew allowed, 300 of them) in a burst would otherwise open 300 connections, each kept
 * for RETIRE_MS, and have this node announce itself 300 times to the whole mesh.
 */
export const FRESH_MIN_INTERVAL_MS = 1000;
/**
 * The most this node's local health score rises (Lifeguard's local health multiplier): its probes
 * and suspicions wait up to (1 + this) times their configured timeouts.
 */
export const MAX_LOCAL_HEALTH = 8;
/**
 * The longest probe timeout a member's measured round trips can earn it (a member this slow to
 * answer is as good as gone for the work the mesh gives it). It bounds what a member that answers
 * slowly on purpose gains: its silent death is noticed at most this much later.
 */
export const MAX_PROBE_TIMEOUT_MS = 2000;

export const DEFAULT_TIMING: MembershipTiming = {
  probeIntervalMs: 500,
  probeTimeoutMs: 500,
  indirectProbes: 2,
  suspicionTimeoutMs: 1000,
  announceIntervalMs: 2000,
  deadRetentionMs: 60_000,
};

/** A try to revive a dead member (Membership's #revive): when it began, its end, whether it ended. */
interface ReviveTry {
  at: number;
  done: Promise<void>;
  ended: boolean;
}

export interface Member {
  readonly info: MemberInfo;
  readonly transport: PeerTransport;
  state: MemberState;
  /** When it entered its state. */
  since: number;
  rttMs?: number;
  /**
   * Its smoothed round trip and the trip's mean deviation (as TCP keeps them, RFC 6298), from its
   * direct answers, late ones included: a member behind a queueing link gets a probe timeout that
   * fits it (#probeTimeoutFor), not one every answer misses.
   */
  srttMs?: number;
  rttVarMs?: number;
  /** When this node last asked it again for its copies (NEW_LIFE_MIN_INTERVAL_MS). */
  newLifeAt?: number;
  /** A new life came inside that window: its copies are asked again when the window ends. */
  recopyOwed?: boolean;
  /** When it last moved to another address. */
  movedAt?: number;
  /** The address it last answered at directly: where copies to it went (onForgotten tells it). */
  confirmedAt?: string;
  /** When a claim last gave it a fresh connection (FRESH_MIN_INTERVAL_MS). */
  freshAt?: number;
  /** A new life came inside that window: tick gives it its fresh connection when the window ends. */
  freshOwed?: boolean;
}

export interface MembershipOptions {
  mesh: string;
  /**
   * This node as it announces itself; `incarnation` is raised here to refute suspicion. Start it at
   * the start time in seconds, so a restarted node supersedes what was said about its last life.
   */
  self: MemberInfo;
  control: ControlPlane;
  /** Opens a data-plane connection to a member. */
  connect: (info: MemberInfo) => PeerTransport;
  clock: Clock;
  logger: Logger;
  vivaldi?: Vivaldi;
  timing?: Partial<MembershipTiming>;
  random?: () => number;
  /**
   * Milliseconds on a monotonic clock (default performance.now): how much time really passed since
   * this membership was made, whatever the wall clock did (#outlive's bound).
   */
  elapsed?: () => number;
  /** Told when a member shows a new life at the same address (it restarted), announced or answered. */
  onRestarted?: (nodeId: string, address: string) => void;
  /** Told when this node takes a later life than it started with (a member knew a later one: #outlive). */
  onOwnLife?: (life: number) => void;
  /**
   * Told of the address a member last answered at once it is no longer there: its entry dropped
   * (dead past the retention, or revoked) or it answers at another address. Whatever was copied
   * there is no longer known to be there. Never for a member that never answered (nothing went there).
   */
  onForgotten?: (nodeId: string, address: string) => void;
  /** Told when a member becomes alive or stops being alive. */
  onChange?: () => void;
  /** Told when an announcement is ignored, and why (for counters). */
  onIgnored?: (reason: string) => void;
}

/**
 * Who is in the mesh, SWIM-style. Members are learned from the control plane (each member's own
 * announcement), but only used once this node has probed them itself over gRPC and they
 * answered as the node id they claimed: a forged or stale announcement never becomes a peer. A member
 * that stops answering is probed through others, then suspected (and the suspicion published, so
 * everyone checks), then declared dead. With the control plane down the list stays as it is and
 * probing goes on; when it returns, announcements bring newcomers and returning members back.
 */
export class Membership {
  readonly #opts: MembershipOptions;
  readonly #timing: MembershipTiming;
  readonly #members = new Map<string, Member>();
  /** Probes under way, by member (probe joins one). */
  readonly #probing = new Map<string, Promise<void>>();
  /** Members given a fresh connection while a probe was in flight: probed again after it. */
  readonly #reprobe = new Set<string>();
  readonly #timers: NodeJS.Timeout[] = [];
  #self: MemberInfo;
  #unconfirmedCursor = -1;
  #deadCursor = -1;
  #cursor = 0;
  /** When start() ran: until the join grace is over, a miss may only mean the view is not yet formed. */
  #startedAt: number | undefined;
  #graceOver = false;
  #closed = false;
  readonly #joinWaiters: (() => void)[] = [];
  /** Replaced connections, closed a little later (#retire). */
  readonly #retiring = new Set<PeerTransport>();
  #announcing = false;
  readonly #moving = new Set<string>();
  /** Each dead member's latest tries to revive it (#revive): the period's, a miss's, and how many are out. */
  readonly #revives = new Map<string, { periodic?: ReviveTry; asked?: ReviveTry; underWay: number }>();
  /** Tries misses asked for under way, all members together (at most MAX_REVIVE_TRIES). */
  #askedTries = 0;
  #reviveCursor = 0;
  /** When this node last refuted a suspicion of itself (at most once a probe period). */
  #refutedAt = Number.NEGATIVE_INFINITY;
  /** When this node last took a later life a member knew of it (at most once a probe period). */
  #outlivedAt = Number.NEGATIVE_INFINITY;
  /** The monotonic clock when this membership was made (#outlive bounds lives by the true start). */
  readonly #madeAtElapsed: number;
  /**
   * Local health (Lifeguard, as in HashiCorp's memberlist): 0 when this node's own probes are
   * answered; raised when its probes go unanswered by the helpers too (what fails is then likely
   * this node's own link: a saturated uplink, a starved CPU), and when others suspect it; lowered by
   * each direct answer. Its probes and suspicions wait (1 + score) times longer, so a node that is
   * itself slow does not declare its healthy peers dead (and stop placing on them, and refuse
   * writes for want of owners) because its own packets are late.
   */
  #health = 0;

  constructor(opts: MembershipOptions) {
    this.#opts = opts;
    this.#timing = { ...DEFAULT_TIMING, ...opts.timing };
    this.#self = opts.self;
    this.#madeAtElapsed = this.#elapsed();
  }

  get self(): MemberInfo {
    return this.#self;
  }

  /** Listens to the control plane and announces; with `timers` (the default) also probes and re-announces on its own. */
  start(options: { timers?: boolean } = {}): void {
    this.#startedAt = this.#now();
    this.#opts.control.onEvent((event) => this.#onEvent(event));
    this.#opts.control.onConnect(() => this.announce());
    this.announce();
    const grace = setTimeout(() => {
      this.#graceOver = true;
      this.#checkJoined();
    }, this.joinGraceMs);
    grace.unref();
    this.#timers.push(grace);
    if (options.timers === false) return;
    // A periodic task survives its own errors: one bad round is logged, the next one runs.
    const failed = (error: Error) =>
      this.#opts.logger.error({ err: error.message }, 'membership round failed');
    this.#timers.push(
      every(this.#timing.probeIntervalMs, () => this.tick(), failed),
      every(this.#timing.announceIntervalMs, () => this.announce(), failed),
    );
  }

  /**
   * How long after start a node may still be forming its view of the mesh: an announcement period
   * (every member announces within it, and answers a newcomer's announcement at once) and a probe.
   */
  get joinGraceMs(): number {
    return this.#timing.announceIntervalMs + this.#timing.probeTimeoutMs;
  }

  /**
   * Whether this node's view of the mesh is formed: it has not started (no control plane), or the
   * join grace is over, or some member answered and none announced is still unconfirmed. Before
   * that, "nobody holds it" or "no such node" may only mean "not met yet".
   */
  joined(): boolean {
    if (this.#startedAt === undefined || this.#graceOver) return true;
    if (this.#now() - this.#startedAt >= this.joinGraceMs) return true; // (else the grace timer ends it)
    const members = [...this.#members.values()];
    return members.some((m) => m.state === 'alive') && !members.some((m) => m.state === 'unconfirmed');
  }

  /** Resolves once joined(): at once when it is, else within the join grace. True when it had to wait. */
  untilJoined(): Promise<boolean> {
    if (this.joined()) return Promise.resolve(false);
    return new Promise((resolve) => this.#joinWaiters.push(() => resolve(true)));
  }

  #checkJoined(): void {
    if (this.#joinWaiters.length === 0 || !this.joined()) return;
    for (const wake of this.#joinWaiters.splice(0)) wake();
  }

  /** The local health score (0 = healthy, at most MAX_LOCAL_HEALTH): see #health. */
  get localHealth(): number {
    return this.#health;
  }

  #adjustHealth(delta: number): void {
    this.#health = Math.min(MAX_LOCAL_HEALTH, Math.max(0, this.#health + delta));
  }

  /** How long a probe waits for an answer now: the configured timeout, scaled by local health. */
  #probeTimeout(): number {
    return this.#timing.probeTimeoutMs * (1 + this.#health);
  }

  /**
   * How long a probe of `member` waits: this node's probe timeout, or more for a member whose
   * measured round trips need it (smoothed trip plus four deviations, as TCP's retransmission timer),
   * up to MAX_PROBE_TIMEOUT_MS.
   */
  #probeTimeoutFor(member: Member): number {
    if (member.srttMs === undefined) return this.#probeTimeout();
    const earned = Math.ceil(member.srttMs + 4 * (member.rttVarMs ?? 0));
    return Math.max(this.#probeTimeout(), Math.min(MAX_PROBE_TIMEOUT_MS, earned));
  }

  /** How long a suspect has to answer or refute before it counts dead: scaled by local health too. */
  #suspicionTimeout(): number {
    return this.#timing.suspicionTimeoutMs * (1 + this.#health);
  }

  /**
   * The incarnation this node knows of member `nodeId` (confirmed, suspect or dead: one it has heard
   * answer), told to it in ping answers so it can find a life it forgot (#outlive).
   */
  incarnationOf(nodeId: string): number | undefined {
    const member = this.#members.get(nodeId);
    return member && member.state !== 'unconfirmed' ? member.info.incarnation : undefined;
  }

  /** Members that answer: the ones to fetch from and place on. */
  alive(): Member[] {
    return [...this.#members.values()].filter((m) => m.state === 'alive');
  }

  all(): Member[] {
    return [...this.#members.values()];
  }

  /** Whether `nodeId` is a member this node knows (in any state). */
  knows(nodeId: string): boolean {
    return this.#members.has(nodeId);
  }

  /**
   * The member `nodeId`, if this node confirmed it at `grpc` and does not count it dead: alive, or
   * suspect (it answered there until a moment ago, and a late answer may yet clear it). For a source
   * or holder another node names, not for new work (placement takes the alive only): a suspect's own
   * call proves it is up, and refusing it would fail a write because this node's probes of it came
   * back late (a loaded node, a queueing link).
   */
  memberAt(nodeId: string, grpc: string): Member | undefined {
    const member = this.#members.get(nodeId);
    return member && (member.state === 'alive' || member.state === 'suspect') && member.info.grpc === grpc
      ? member
      : undefined;
  }

  announce(): void {
    const coordinate = this.#opts.vivaldi?.coordinate;
    const member = {
      ...this.#self,
      ...(coordinate ? { coordinate: { ...coordinate, vec: [...coordinate.vec] } } : {}),
    };
    this.#publish({ type: 'member.announce', body: { member } });
  }

  /**
   * Learns of a member from its own word (its announcement, `from` it; or a seed, no `from`) and
   * probes it soon. Claims are not trusted: a member this node has confirmed keeps its address and
   * topology unless the address it is said to have moved to answers as that member. What one member
   * says of another is refused (`about-another`): it could otherwise set another's life, move it,
   * or introduce members nobody runs, each costing this node a connection and a place among the
   * MAX_UNCONFIRMED (one sender's made-up list filled them all, and real newcomers were refused).
   * So each sender introduces one member at most: itself (EventSigner: the announcer is the signer).
   */
  learn(info: MemberInfo, from?: string): void {
    if (info.nodeId === this.#self.nodeId) return;
    if (from !== undefined && from !== info.nodeId) {
      this.#opts.onIgnored?.('about-another');
      return;
    }
    /** The incarnation claimed, if it may be taken (plausible). */
    const claim = this.#plausible(info.incarnation) ? info.incarnation : undefined;
    const known = this.#members.get(info.nodeId);
    const confirmed = known !== undefined && (known.state === 'alive' || known.state === 'suspect');
    if (known && info.grpc === known.info.grpc) {
      // Same address: probes decide its state; topology comes from its own answers once confirmed.
      const topology = confirmed ? { zone: known.info.zone, region: known.info.region } : {};
      const revived = known.state === 'dead'; // still announcing: probe again, only an answer revives it
      // A new life (it restarted at the same address) or back from the dead: the old connection may
      // sit in a reconnect backoff after its refusals, so it gets a fresh one, probed at once. A
      // refutation (the same life) of a suspicion this node holds gets one too (the old one may sit
      // on a half-open TCP connection), but nothing is copied to it again: it did not restart.
      const claimed = claim ?? known.info.incarnation;
      const restarted = lifeOf(claimed) > lifeOf(known.info.incarnation);
      const refuted = !restarted && claimed > known.info.incarnation;
      // (A revival takes the member out of the dead, so revivals cannot come in bursts: never held back.)
      const wanted = revived || restarted || (refuted && known.state === 'suspect');
      const fresh = revived || (wanted && !this.#tooSoon(known.freshAt, FRESH_MIN_INTERVAL_MS));
      if (fresh) this.#retire(known.transport);
      this.#members.set(info.nodeId, {
        ...known,
        // A stale announcement (sent before a refutation) does not lower what is known.
        info: {
          ...info,
          ...topology,
          incarnation: Math.max(claimed, known.info.incarnation),
        },
        ...(fresh
          ? { transport: this.#opts.connect(info), freshAt: this.#now(), freshOwed: false }
          : restarted
            ? { freshOwed: true } // a second life inside the window: tick gives it one when it ends
            : {}),
        ...(revived ? { state: 'unconfirmed' as const, since: this.#now() } : {}),
      });
      if (restarted) this.#newLife(info.nodeId);
      // A member that restarted has forgotten this node: it hears of it now, not a period later.
      if (fresh && (revived || restarted)) this.#announceSoon();
      // A probe in flight uses the old connection: the fresh one is probed once it is done.
      if (fresh) this.#probeFresh(info.nodeId);
      return;
    }
    if (known && (claim === undefined || claim < known.info.incarnation)) {
      // An announcement older than what is known of the member (a replay, within the skew allowed,
      // of one it signed before it moved): where it was, not where it is.
      this.#opts.onIgnored?.('stale-move');
      return;
    }
    if (known && this.#tooSoon(known.movedAt)) {
      this.#opts.onIgnored?.('move-too-soon'); // its next announcement may move it
      return;
    }
    if (known && this.#tooSoon(known.freshAt, FRESH_MIN_INTERVAL_MS)) {
      // Every address claimed costs a connection to it, answered or not: at most one a second per
      // member, or a member naming a new address in each announcement would have every node connect
      // wherever it says.
      this.#opts.onIgnored?.('move-too-soon');
      return;
    }
    if (known) known.freshAt = this.#now();
    if (confirmed) {
      this.#verifyMove(known, { ...info, incarnation: claim ?? known.info.incarnation }).catch(
        (error: unknown) =>
          this.#opts.logger.warn(
            { member: info.nodeId, err: (error as Error).message },
            'checking a moved member failed',
          ),
      );
      return;
    }
    const unconfirmed = [...this.#members.values()].filter((m) => m.state === 'unconfirmed').length;
    if (!known && unconfirmed >= MAX_UNCONFIRMED) {
      this.#opts.onIgnored?.('too-many-unconfirmed');
      return;
    }
    known?.transport.close();
    this.#members.set(info.nodeId, {
      info: { ...info, incarnation: claim ?? known?.info.incarnation ?? 0 },
      transport: this.#opts.connect(info),
      state: 'unconfirmed',
      since: this.#now(),
      // A dead (or never answered) member announcing itself elsewhere: unproven, so no move window
      // starts (its answer there starts one); its windows go on.
      ...(known
        ? {
            newLifeAt: known.newLifeAt,
            recopyOwed: known.recopyOwed,
            movedAt: known.movedAt,
            confirmedAt: known.confirmedAt,
            freshAt: known.freshAt,
          }
        : {}),
    });
    // A probe in flight uses the old connection (its answer is dropped): the new one is probed after it.
    this.#probeFresh(info.nodeId);
    if (!known) this.#announceSoon(); // so a newcomer learns of this node without waiting a period
  }

  /**
   * Switches a confirmed member to a claimed new address only if that address answers as it. The
   * claim's incarnation is one learn may take (its own, plausible, or the known one).
   */
  async #verifyMove(known: Member, claim: MemberInfo): Promise<void> {
    if (this.#moving.has(claim.nodeId)) return;
    this.#moving.add(claim.nodeId);
    const transport = this.#opts.connect(claim);
    try {
      const answer = await this.#ping(transport, claim.nodeId);
      // What happened to the member meanwhile stands (evicted, forgotten, moved, a re-copy owed).
      // (Its old address may have stopped answering meanwhile, as it does when a member really moves:
      // a direct answer at the new one is the proof a revival takes too.)
      const current = this.#current(known);
      if (!current) {
        transport.close();
        this.#opts.onIgnored?.('unverified-move');
        return;
      }
      this.#retire(current.transport);
      const incarnation = Math.max(claim.incarnation, current.info.incarnation);
      const info = { ...claim, incarnation, zone: answer.zone, region: answer.region };
      const moved: Member = {
        info,
        transport,
        // Its state as it was: a dead one comes alive below, through #setState (listeners hear it).
        state: current.state,
        since: current.since,
        rttMs: answer.rttMs,
        newLifeAt: current.newLifeAt,
        recopyOwed: current.recopyOwed,
        movedAt: this.#now(),
        confirmedAt: claim.grpc,
      };
      this.#members.set(claim.nodeId, moved);
      this.#setState(moved, 'alive', 'answered at its new address');
      if (current.confirmedAt !== undefined && current.confirmedAt !== claim.grpc)
        this.#opts.onForgotten?.(claim.nodeId, current.confirmedAt);
      this.#opts.logger.info({ member: claim.nodeId, from: known.info.grpc, to: claim.grpc }, 'member moved');
    } catch {
      transport.close(); // the claimed address does not answer as that member: a stale or forged claim
      this.#opts.onIgnored?.('unverified-move');
    } finally {
      this.#moving.delete(claim.nodeId);
    }
  }

  /** One protocol period: probe the next member round-robin and every suspect; age suspects and the dead. */
  tick(): void {
    const now = this.#now();
    for (const member of this.#members.values()) {
      // A clock set back: its time in its state starts again now, rather than not at all until the
      // clock is back where it was (a suspect never dead, a dead member never forgotten).
      if (member.since > now) member.since = now;
      if (member.state === 'suspect' && now - member.since >= this.#suspicionTimeout()) {
        this.#setState(member, 'dead', 'no answer within the suspicion timeout');
      } else if (member.state === 'suspect') this.#probeLater(member.info.nodeId);
      else if (
        (member.state === 'dead' || member.state === 'unconfirmed') &&
        now - member.since >= this.#timing.deadRetentionMs
      ) {
        this.#forget(member);
      } else {
        if (member.recopyOwed) this.#newLife(member.info.nodeId); // once its window is over
        if (member.freshOwed && !this.#tooSoon(member.freshAt, FRESH_MIN_INTERVAL_MS)) this.#refresh(member);
      }
    }
    // A newcomer is admitted only on its own answer: the announced but unconfirmed are probed again
    // every period (a few at a time, so a flood of forged announces costs little), not only when the
    // round-robin comes to them.
    const unconfirmed = [...this.#members.values()].filter((m) => m.state === 'unconfirmed');
    for (let i = 0; i < Math.min(UNCONFIRMED_PROBES_PER_TICK, unconfirmed.length); i++) {
      this.#unconfirmedCursor = (this.#unconfirmedCursor + 1) % unconfirmed.length;
      this.#probeLater(unconfirmed[this.#unconfirmedCursor]!.info.nodeId);
    }
    const dead = [...this.#members.values()].filter((m) => m.state === 'dead');
    for (let i = 0; i < Math.min(DEAD_RETRIES_PER_TICK, dead.length); i++) {
      this.#deadCursor = (this.#deadCursor + 1) % dead.length;
      this.#revive(dead[this.#deadCursor]!, true)?.catch(() => undefined); // (it logs its own failures)
    }
    const candidates = [...this.#members.values()].filter((m) => m.state === 'alive');
    if (candidates.length === 0) return;
    this.#cursor = (this.#cursor + 1) % candidates.length;
    this.#probeLater(candidates[this.#cursor]!.info.nodeId);
  }

  /**
   * Tries the dead members `matches` picks now rather than at their turn, and resolves true when one
   * of those it tried is alive then. A lookup that found nothing, or a message whose target is not
   * alive, asks this before answering "not found": a partition may have healed a moment ago, and the
   * periodic try comes up to a period later. Bounded so that misses stay cheap whatever the mesh
   * does: the tries are #revive's (each member at most once per REVIVE_EVERY_MS, callers in between
   * join the latest; at most MAX_REVIVE_TRIES under way); at most REVIVE_AT_ONCE members a call, in
   * turn (the next call takes the next ones); and the caller waits REVIVE_WAIT_MS at most. Members
   * only heard of (never confirmed) are not tried: anyone may announce them.
   */
  async reviveNow(matches: (info: MemberInfo) => boolean, waitMs = REVIVE_WAIT_MS): Promise<boolean> {
    // The dead, and members back by their own announcement after this node counted them dead
    // (confirmed here before, now unconfirmed on a new connection: a restart), whose probe is joined.
    const wanted = [...this.#members.values()].filter(
      (m) =>
        (m.state === 'dead' || (m.state === 'unconfirmed' && m.confirmedAt !== undefined)) && matches(m.info),
    );
    if (wanted.length === 0) return false;
    const picked = Array.from(
      { length: Math.min(REVIVE_AT_ONCE, wanted.length) },
      (_, i) => wanted[(this.#reviveCursor + i) % wanted.length]!,
    );
    this.#reviveCursor = (this.#reviveCursor + picked.length) % wanted.length;
    const tries = picked
      .map((m) => (m.state === 'dead' ? this.#revive(m, false) : this.probe(m.info.nodeId)))
      .filter((t) => t !== undefined);
    if (tries.length === 0) return false;
    await within(Promise.all(tries), waitMs);
    return wanted.some((m) => this.#members.get(m.info.nodeId)?.state === 'alive');
  }

  /**
   * A try to revive a dead member on a fresh connection (#retryDead), `periodic` (the protocol
   * period's) or asked for by a miss. A miss joins the latest try a miss began within
   * REVIVE_EVERY_MS; the period's joins only a periodic try still under way that began within it.
   * Past MAX_TRIES_PER_MEMBER tries of the member under way, or MAX_REVIVE_TRIES asked for by misses
   * in all, no try begins (the caller joins the latest, if any). Tries of one member overlap: one
   * that began while the partition lasted waits for its SYN's next retransmission, and holds no
   * later one back. Never rejects: a failure is logged.
   */
  #revive(member: Member, periodic: boolean): Promise<void> | undefined {
    const nodeId = member.info.nodeId;
    let tries = this.#revives.get(nodeId);
    if (!tries) this.#revives.set(nodeId, (tries = { underWay: 0 }));
    const last = periodic ? tries.periodic : tries.asked;
    if (last && this.#tooSoon(last.at, REVIVE_EVERY_MS) && (!periodic || !last.ended)) return last.done;
    const latest = (last ?? tries.periodic ?? tries.asked)?.done;
    if (this.#closed || tries.underWay >= MAX_TRIES_PER_MEMBER) return latest;
    if (!periodic && this.#askedTries >= MAX_REVIVE_TRIES) return latest;
    const counted = tries;
    counted.underWay++;
    if (!periodic) this.#askedTries++;
    const entry: ReviveTry = { at: this.#now(), done: Promise.resolve(), ended: false };
    entry.done = this.#retryDead(member)
      .catch((error: unknown) =>
        this.#opts.logger.warn({ member: nodeId, err: (error as Error).message }, 'retry failed'),
      )
      .finally(() => {
        counted.underWay--;
        if (!periodic) this.#askedTries--;
        entry.ended = true;
      });
    if (periodic) tries.periodic = entry;
    else tries.asked = entry;
    return entry.done;
  }

  /**
   * Pings a dead member on a fresh connection, waiting REVIVE_TIMEOUT_MS for the handshakes and the
   * answer; its direct answer makes it alive again on that connection. Other tries of it, and a
   * probe, may be under way meanwhile: the first answer revives it, and later ones find it alive.
   */
  async #retryDead(member: Member): Promise<void> {
    const nodeId = member.info.nodeId;
    const transport = this.#opts.connect(member.info);
    const timeoutMs = Math.max(REVIVE_TIMEOUT_MS, this.#probeTimeoutFor(member));
    const answer = await this.#ping(transport, nodeId, timeoutMs).catch(() => undefined);
    // Unless it is still the same dead member (an announcement may have replaced it meanwhile).
    if (!answer || this.#closed || this.#members.get(nodeId) !== member || member.state !== 'dead') {
      transport.close();
      return;
    }
    this.#retire(member.transport);
    // A revival starts its round trips afresh: what it earned before it died does not carry over.
    const revived = { ...member, transport, rttMs: undefined, srttMs: undefined, rttVarMs: undefined };
    this.#members.set(nodeId, revived);
    // An answer that carries its incarnation says whether it restarted meanwhile (#confirmed tells
    // onRestarted then); one that does not may come from a new life: what was copied to it is asked
    // again, as for a member that announces one. Its round trip took the handshakes too: no sample
    // of the member's round trips (nor of its network coordinate).
    this.#confirmed(revived, answer, true, false);
    if (answer.incarnation === undefined) this.#newLife(nodeId);
  }

  /**
   * Closes a member's replaced connection 5 s later, so that unary calls already on it (each with
   * its own deadline) may finish: closed at once, a call just starting on it would fail although the
   * member answers on the new one. New calls take the new one; a longer stream on the old one is cut.
   */
  #retire(transport: PeerTransport): void {
    this.#retiring.add(transport);
    setTimeout(() => {
      if (this.#retiring.delete(transport)) transport.close();
    }, RETIRE_MS).unref();
  }

  /** The fresh connection (and announcement) a new life inside FRESH_MIN_INTERVAL_MS was owed. */
  #refresh(member: Member): void {
    const nodeId = member.info.nodeId;
    this.#retire(member.transport);
    this.#members.set(nodeId, {
      ...member,
      transport: this.#opts.connect(member.info),
      freshAt: this.#now(),
      freshOwed: false,
    });
    this.#announceSoon();
    this.#probeFresh(nodeId);
  }

  /**
   * Drops a member's entry. A member forgotten here that comes back (at the same address, perhaps
   * with an empty disk, perhaps another node there) is learned as a newcomer, so no restart is seen:
   * the address it answered at is forgotten too (onForgotten), and what it should hold is asked of
   * whoever answers there again. One that never answered (a forged announcement) had nothing copied.
   */
  #forget(member: Member): void {
    const { nodeId } = member.info;
    member.transport.close();
    this.#members.delete(nodeId);
    this.#revives.delete(nodeId);
    if (member.confirmedAt !== undefined) this.#opts.onForgotten?.(nodeId, member.confirmedAt);
  }

  /** Probes a member's new connection: now, or once a probe in flight on the old one is done. */
  #probeFresh(nodeId: string): void {
    if (this.#probing.has(nodeId)) this.#reprobe.add(nodeId);
    else this.#probeLater(nodeId);
  }

  /** A probe nobody awaits: its failure is logged, never an unhandled rejection. */
  #probeLater(nodeId: string): void {
    this.probe(nodeId).catch((error: unknown) =>
      this.#opts.logger.warn({ member: nodeId, err: (error as Error).message }, 'probe failed'),
    );
  }

  /** Forgets a member at once (its certificate was revoked): no probe, no connection, no placement. */
  evict(nodeId: string): void {
    const member = this.#members.get(nodeId);
    if (!member) return;
    this.#forget(member);
    this.#opts.logger.warn({ member: nodeId }, 'member revoked: evicted');
    this.#opts.onChange?.();
  }

  /**
   * Probes `nodeId` directly, then through others; updates its state. Resolves when done. A probe of
   * it already under way is joined, not doubled.
   */
  probe(nodeId: string): Promise<void> {
    const running = this.#probing.get(nodeId);
    if (running) return running;
    const member = this.#members.get(nodeId);
    if (!member) return Promise.resolve();
    const probing = this.#probeOnce(nodeId, member).finally(() => {
      this.#probing.delete(nodeId);
      if (this.#reprobe.delete(nodeId)) this.#probeLater(nodeId);
    });
    this.#probing.set(nodeId, probing);
    return probing;
  }

  async #probeOnce(nodeId: string, member: Member): Promise<void> {
    // The direct ping waits its probe timeout before others are asked, but its answer still counts
    // until the suspicion would end: a node whose uplink is queueing (a slow or bloated link)
    // answers late, and late is not dead.
    // A member not yet confirmed is on a new connection: its first answer takes the handshakes too
    // (see REVIVE_TIMEOUT_MS), and only that answer can confirm it, so it is waited for.
    const unconfirmed = member.state === 'unconfirmed';
    const timeoutMs = unconfirmed
      ? Math.max(REVIVE_TIMEOUT_MS, this.#probeTimeoutFor(member))
      : this.#probeTimeoutFor(member);
    const late = this.#ping(
      member.transport,
      member.info.nodeId,
      unconfirmed ? timeoutMs : timeoutMs + this.#suspicionTimeout(),
    ).catch(() => undefined);
    const direct = await within(late, timeoutMs);
    // The entry may have changed while the ping was out: an answer counts for the entry now held.
    let current = this.#current(member);
    if (!current) return; // evicted, forgotten, or on a fresh connection (probed on its own)
    if (direct) {
      if (current.state !== 'unconfirmed') this.#adjustHealth(-1);
      return this.#confirmed(current, direct, true);
    }
    // Only a direct answer, over mTLS, proves a newcomer's id; others' word keeps a known member
    // alive across a bad link, but would let one lying member vouch for an id nobody holds. Nor
    // does it revive a dead member (a hint, a suspicion or a leave, brought this probe): only the
    // member's own answer does.
    if (current.state === 'unconfirmed') {
      this.#opts.onIgnored?.('unproven-member');
      return;
    }
    if (current.state === 'dead') return;
    const { answer: answered, missed } = await this.#indirect(current);
    current = this.#current(current);
    if (!current) return;
    if (answered) return this.#confirmed(current, answered, false);
    // Its own answer came while the others were asked: no suspicion (and no refutation owed).
    const meanwhile = await within(late, 0);
    if (meanwhile) return this.#confirmed(current, meanwhile, true);
    // Helpers that did not even say "it does not answer" (a nack) point at this node's own link.
    // (With no helpers there is nothing to tell the two apart: a mesh of two keeps its pace.)
    this.#adjustHealth(missed);
    if (current.state === 'alive') {
      this.#setState(current, 'suspect', 'no answer, directly or through others');
      this.#publish({ type: 'member.suspect', body: { nodeId, incarnation: current.info.incarnation } });
    }
    // Its direct answer, coming back late, clears the suspicion (if it still stands then).
    const suspected = current;
    late
      .then((answer) => {
        const now = answer && this.#current(suspected);
        if (now?.state === 'suspect') this.#confirmed(now, answer!, true);
      })
      .catch((error: unknown) =>
        this.#opts.logger.warn({ member: nodeId, err: (error as Error).message }, 'late answer not applied'),
      );
  }

  /**
   * The entry held for `member`'s id now, if it still uses the same connection: what an await found
   * out about `member` holds for it. Undefined when the member was evicted or forgotten meanwhile, or
   * replaced on a fresh connection (which is probed on its own). Writing back the object read before
   * the await would undo what happened meanwhile (a revoked member back, an owed re-copy dropped).
   */
  #current(member: Member): Member | undefined {
    const current = this.#members.get(member.info.nodeId);
    return current?.transport === member.transport ? current : undefined;
  }

  /** Pings a member's address for a caller elsewhere; undefined when `target` is no member here. */
  async probeFor(target: string): Promise<PingResult | undefined> {
    const member = [...this.#members.values()].find((m) => m.info.grpc === target);
    if (!member) return undefined;
    // The configured timeout, not this node's health-scaled one nor what the member's round trips
    // earned it here: the asker waits twice its own configured timeout, and an answer ("it does not
    // answer") that comes after that counts against the asker's health. (A member that answered this
    // node slowly would otherwise make this node's answers late for every asker.)
    return this.#ping(member.transport, member.info.nodeId, this.#timing.probeTimeoutMs);
  }

  close(): void {
    this.#closed = true;
    for (const timer of this.#timers) clearInterval(timer);
    this.#graceOver = true;
    this.#checkJoined();
    this.#publish({
      type: 'member.leave',
      body: { nodeId: this.#self.nodeId, incarnation: this.#self.incarnation },
    });
    for (const member of this.#members.values()) member.transport.close();
    for (const transport of this.#retiring) transport.close();
    this.#retiring.clear();
  }

  async #ping(
    transport: PeerTransport,
    expected: string,
    timeoutMs = this.#probeTimeout(),
  ): Promise<PingResult> {
    // The call's own deadline too: a control-call timeout shorter than this wait would cut it.
    const result = await transport.ping(AbortSignal.timeout(timeoutMs), timeoutMs);
    if (result.nodeId !== expected)
      throw new Error(`${transport.address} answered as ${result.nodeId}, not ${expected}`);
    return result;
  }

  /**
   * Asks a few other members to probe `member`: its answer through one of them, and how many
   * helpers did not answer at all within the wait (no answer and no "it did not answer").
   */
  async #indirect(member: Member): Promise<{ answer: PingResult | undefined; missed: number }> {
    const helpers = this.alive()
      .filter((m) => m !== member)
      .sort(() => (this.#opts.random ?? Math.random)() - 0.5)
      .slice(0, this.#timing.indirectProbes);
    let missed = 0;
    const answers = await Promise.all(
      helpers.map((h) => {
        const signal = AbortSignal.timeout(2 * this.#probeTimeout());
        return h.transport
          .probe(member.info.grpc, signal)
          .then((r) => (r.nodeId === member.info.nodeId ? r : undefined))
          .catch(() => {
            if (signal.aborted) missed++; // the helper's own answer never came back
            return undefined;
          });
      }),
    );
    return { answer: answers.find((a) => a !== undefined), missed };
  }

  /** Whether `at` lies within `windowMs` before now (a clock set back ends the window). */
  #tooSoon(at: number | undefined, windowMs = NEW_LIFE_MIN_INTERVAL_MS): boolean {
    if (at === undefined) return false;
    const elapsed = this.#now() - at;
    return elapsed >= 0 && elapsed < windowMs;
  }

  /**
   * An incarnation a member may claim: an integer whose life (a start second) is not further ahead
   * of this node's clock than clocks may differ. Another one is a lie (or a broken clock), and would
   * spend every later life at once.
   */
  #plausible(incarnation: number): boolean {
    return (
      Number.isSafeInteger(incarnation) &&
      incarnation >= 0 &&
      lifeOf(incarnation) * 1000 <= this.#now() + MAX_CLOCK_SKEW_MS
    );
  }

  /**
   * `nodeId` has a new life (or may have: a revived member that did not say): everything copied to it
   * is asked again (onRestarted), at most once in NEW_LIFE_MIN_INTERVAL_MS; inside the window it is
   * owed, and tick makes it when the window ends.
   */
  #newLife(nodeId: string): void {
    const member = this.#members.get(nodeId);
    if (!member) return;
    if (this.#tooSoon(member.newLifeAt)) {
      member.recopyOwed = true;
      return;
    }
    member.newLifeAt = this.#now();
    member.recopyOwed = false;
    this.#opts.onRestarted?.(nodeId, member.info.grpc);
  }

  /**
   * `member` answered: `direct`ly (over mTLS, to this node), or through another member. `timed`:
   * the answer's round trip is one of the member's (not one that took a fresh connection's
   * handshakes too), a sample for its probe timeout and network coordinate.
   */
  #confirmed(
    member: Member,
    result: PingResult,
    direct: boolean,
    timed = direct && result.connecting !== true,
  ): void {
    if (direct && result.yourIncarnation !== undefined)
      this.#outlive(result.yourIncarnation, member.info.nodeId);
    if (direct) {
      // Answering at another address than before (re-addressed while dead): the old one's copies are
      // no longer its.
      const before = member.confirmedAt;
      member.confirmedAt = member.info.grpc;
      if (before !== undefined && before !== member.info.grpc) {
        member.movedAt = this.#now(); // a move like any other: the next one waits out the window
        this.#opts.onForgotten?.(member.info.nodeId, before);
      }
    }
    if (timed) {
      member.rttMs = result.rttMs;
      Object.assign(member, roundTrips(member, result.rttMs));
      if (result.coordinate) this.#opts.vivaldi?.update(member.info.nodeId, result.rttMs, result.coordinate);
    }
    // A new life in its own answer (it restarted, and no announcement said so yet: the control
    // plane may be down): what was copied to it is asked again.
    const restarted =
      direct &&
      result.incarnation !== undefined &&
      this.#plausible(result.incarnation) &&
      lifeOf(result.incarnation) > lifeOf(member.info.incarnation);
    // Topology as the member itself answers over the data plane, not as an announcement claimed it.
    if (restarted || result.zone !== member.info.zone || result.region !== member.info.region) {
      this.#members.set(member.info.nodeId, {
        ...member,
        info: {
          ...member.info,
          zone: result.zone,
          region: result.region,
          ...(restarted ? { incarnation: result.incarnation! } : {}),
        },
        // A new life's round trips start from this answer (or, untimed, the next), not from what its
        // last life earned.
        ...(restarted
          ? timed
            ? roundTrips({}, result.rttMs)
            : { srttMs: undefined, rttVarMs: undefined }
          : {}),
      });
    }
    if (restarted) this.#newLife(member.info.nodeId);
    this.#setState(
      this.#members.get(member.info.nodeId)!,
      'alive',
      direct ? 'answered' : 'answered through others',
    );
  }

  #onEvent(event: ControlEvent): void {
    switch (event.type) {
      case 'member.announce':
        return this.learn(event.body.member, event.from);
      case 'members.snapshot':
        // Nothing sends one (the operator was to, and never did), and any node of the mesh can sign
        // one: 400 made-up members filled every unconfirmed place here and kept real newcomers out.
        // Refused and counted; a member is learned from its own announcement only (learn).
        this.#opts.onIgnored?.('members-snapshot');
        return;
      case 'member.leave':
      case 'member.suspect': {
        const { nodeId, incarnation } = event.body;
        if (nodeId === this.#self.nodeId) {
          // Only a suspicion of this very incarnation needs an answer: an older one was answered, and
          // nobody can know of a newer one (a peer that says so is lying, and would otherwise make
          // this node count up to what looks like a new life).
          if (incarnation === this.#self.incarnation) this.#refute();
          return;
        }
        this.#probeLater(nodeId); // a hint: check for ourselves
        return;
      }
    }
  }

  /** One announcement for any number of newcomers learned in the same turn of the event loop. */
  #announceSoon(): void {
    if (this.#announcing) return;
    this.#announcing = true;
    queueMicrotask(() => {
      this.#announcing = false;
      this.announce();
    });
  }

  #refute(): void {
    // At most once a probe period: a flood of suspicions (one peer repeating them) is one refutation.
    const now = this.#now();
    if (this.#tooSoon(this.#refutedAt, this.#timing.probeIntervalMs)) return;
    this.#refutedAt = now;
    this.#adjustHealth(1); // others cannot hear this node: its own link may be what fails
    this.#self = { ...this.#self, incarnation: this.#self.incarnation + 1 };
    this.#opts.logger.warn(
      { incarnation: this.#self.incarnation },
      'suspected by others: announcing a new incarnation',
    );
    this.announce();
  }

  /**
   * Member `by` knows a later life of this node than its own (`known`, from its ping answer): this
   * node restarted with its clock behind that life and without the store folder that kept it (a new
   * disk; life.ts covers the same disk). Its announcements would read as replays of old ones, so
   * peers would miss the restart (nothing copied to it again). It takes the next life and announces
   * it, unless that life is further ahead than life.ts follows (FOLLOW_AHEAD_S) of when this process
   * began, by the clock now (now less the time that really passed since, on a monotonic clock): every
   * life an honest member knows of it is from before then, and a clock set right after the start (a
   * device that booted with its clock behind, then NTP) moves that start with it. So what a lying
   * member can make it take is bounded for the process's whole run, not by a bound that moves with
   * time: at most FOLLOW_AHEAD_S lives, one a probe period.
   */
  #outlive(known: number, by: string): void {
    if (!Number.isSafeInteger(known) || lifeOf(known) <= lifeOf(this.#self.incarnation)) return;
    const life = lifeOf(known) + 1;
    const began = this.#now() - (this.#elapsed() - this.#madeAtElapsed);
    if (life * 1000 > began + FOLLOW_AHEAD_S * 1000) return;
    if (this.#tooSoon(this.#outlivedAt, this.#timing.probeIntervalMs)) return;
    this.#outlivedAt = this.#now();
    this.#self = { ...this.#self, incarnation: life * REFUTATIONS_PER_LIFE };
    this.#opts.logger.warn(
      { member: by, knownLifeS: lifeOf(known), lifeS: life },
      'a member knows a later life of this node (a new disk, the clock behind): taking the next one',
    );
    this.#opts.onOwnLife?.(life);
    this.announce();
  }

  #setState(member: Member, state: MemberState, why: string): void {
    if (member.state === state) return;
    const level = state === 'alive' ? 'info' : 'warn';
    this.#opts.logger[level](
      { member: member.info.nodeId, from: member.state, to: state, why },
      'membership change',
    );
    const wasAlive = member.state === 'alive';
    member.state = state;
    member.since = this.#now();
    if (wasAlive !== (state === 'alive')) this.#opts.onChange?.();
    this.#checkJoined();
  }

  #publish(
    event:
      | { type: 'member.announce'; body: { member: MemberInfo } }
      | { type: 'member.leave' | 'member.suspect'; body: { nodeId: string; incarnation: number } },
  ): void {
    const { control } = this.#opts;
    control.publish({
      v: 1,
      mesh: this.#opts.mesh,
      from: this.#self.nodeId,
      sentAtMs: this.#now(),
      ...event,
    });
  }

  #now(): number {
    return this.#opts.clock.now();
  }

  #elapsed(): number {
    return this.#opts.elapsed?.() ?? performance.now();
  }
}

/** `promise`'s value if it settles within `ms`, else undefined (it goes on; its value can be awaited later). */
async function within<T>(promise: Promise<T | undefined>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
    timer.unref();
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A member's smoothed round trip and its mean deviation after one more sample, as TCP keeps them
 * (RFC 6298: the first sample sets the trip and half of it as deviation; then gains 1/8 and 1/4).
 */
function roundTrips(
  known: Pick<Member, 'srttMs' | 'rttVarMs'>,
  sampleMs: number,
): Required<Pick<Member, 'srttMs' | 'rttVarMs'>> {
  if (known.srttMs === undefined) return { srttMs: sampleMs, rttVarMs: sampleMs / 2 };
  return {
    srttMs: 0.875 * known.srttMs + 0.125 * sampleMs,
    rttVarMs: 0.75 * (known.rttVarMs ?? 0) + 0.25 * Math.abs(known.srttMs - sampleMs),
  };
}
