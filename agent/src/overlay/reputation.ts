import type { Clock } from '../time/clock.ts';

/** What a peer did, as this node verified it. */
export type PeerOutcome = 'good' | 'bad-chunk' | 'bad-manifest' | 'failed';

/** How much each outcome moves a score: lies cost much more than failures, and good service earns slowly. */
const WEIGHTS: Record<PeerOutcome, number> = { good: 0.5, 'bad-chunk': -4, 'bad-manifest': -6, failed: -1 };
/** Scores stay within these bounds; a peer cannot bank good will without end. */
const MAX_SCORE = 5;
const MIN_SCORE = -50;
/** Below this a peer is not chosen to fetch from. */
export const DISTRUST_BELOW = -10;
/** Scores fade toward 0 with this half-life: a peer recovers once it behaves (or stops being asked). */
const HALF_LIFE_MS = 5 * 60_000;
/**
 * How many distinct peers (each trusted by this node) must say they distrust a node before this
 * node avoids it on their word: one lying node cannot exile an honest one.
 */
export const HEARSAY_QUORUM = 2;
/** At most this many distrusted nodes in one report (the most distrusted first). */
export const MAX_SHARED = 64;

/**
 * A decaying score per peer from outcomes this node verified itself: a chunk that failed its digest,
 * a manifest no node vouches for, a failed or timed-out call, a good batch. Peers below
 * DISTRUST_BELOW are not chosen to fetch from until their score has faded above it.
 *
 * Nodes also share whom they distrust (in their signed `node.stats`, only from what they verified
 * themselves, never from hearsay, so that no rumour feeds itself): a node that HEARSAY_QUORUM peers
 * this node trusts report, in reports fresher than `hearsayTtlMs`, is avoided too, until they stop
 * reporting it.
 */
export class Reputation {
  readonly #clock: Clock;
  readonly #self: string | undefined;
  readonly #hearsayTtlMs: number;
  readonly #scores = new Map<string, { score: number; atMs: number }>();
  /** Each reporter's latest report: whom it distrusts, and when it said so. */
  readonly #heard = new Map<string, { nodes: Set<string>; atMs: number }>();
  /** The reverse of #heard: for each accused node, who reports it (so a lookup costs its accusers, not every report). */
  readonly #accusers = new Map<string, Set<string>>();
  /** The clock's time at the last call (#now). */
  #lastNow = Number.NEGATIVE_INFINITY;

  constructor(clock: Clock, opts: { self?: string; hearsayTtlMs?: number } = {}) {
    this.#clock = clock;
    this.#self = opts.self;
    this.#hearsayTtlMs = opts.hearsayTtlMs ?? 30_000;
  }

  /**
   * `reporter` (a node of the mesh whose signature was checked) said at `sentAtMs` that it distrusts
   * `nodes`; replaces its previous report, unless this one is not newer (a replay of an old report
   * changes nothing). What it says of itself or of this node is ignored.
   */
  heard(reporter: string, nodes: readonly string[], sentAtMs: number): void {
    if (reporter === this.#self) return;
    const known = this.#heard.get(reporter);
    if (known && sentAtMs <= known.atMs) return;
    const kept = new Set(nodes.slice(0, MAX_SHARED).filter((n) => n !== reporter && n !== this.#self));
    if (this.#heard.size >= 10_000 && !known) {
      this.#pruneHeard();
      if (this.#heard.size >= 10_000) return;
    }
    // Dated by when it was said (never later than now), not when it arrived: a delayed or replayed
    // report is as old as it is.
    if (known) this.#unindex(reporter, known.nodes);
    this.#heard.set(reporter, { nodes: kept, atMs: Math.min(sentAtMs, this.#now()) });
    for (const node of kept) {
      const accusers = this.#accusers.get(node) ?? new Set<string>();
      accusers.add(reporter);
      this.#accusers.set(node, accusers);
    }
  }

  #unindex(reporter: string, nodes: Set<string>): void {
    for (const node of nodes) {
      const accusers = this.#accusers.get(node);
      accusers?.delete(reporter);
      if (accusers?.size === 0) this.#accusers.delete(node);
    }
  }

  /** How many peers this node trusts say, in a fresh report, that they distrust `peer`. */
  reportedBy(peer: string): number {
    const accusers = this.#accusers.get(peer);
    if (!accusers) return 0;
    const horizon = this.#now() - this.#hearsayTtlMs;
    let n = 0;
    for (const reporter of accusers)
      if (this.#heard.get(reporter)!.atMs >= horizon && this.score(reporter) >= DISTRUST_BELOW) n++;
    return n;
  }

  /** The peers this node distrusts from what it verified itself (what it shares), the most distrusted first. */
  ownDistrusted(): string[] {
    return [...this.#scores.keys()]
      .map((peer) => ({ peer, score: this.score(peer) }))
      .filter((p) => p.score < DISTRUST_BELOW)
      .sort((a, b) => a.score - b.score)
      .slice(0, MAX_SHARED)
      .map((p) => p.peer);
  }

  record(peer: string, outcome: PeerOutcome): void {
    const now = this.#now();
    const score = Math.min(MAX_SCORE, Math.max(MIN_SCORE, this.score(peer) + WEIGHTS[outcome]));
    if (this.#scores.size >= 10_000 && !this.#scores.has(peer)) this.#prune();
    this.#scores.set(peer, { score, atMs: now });
  }

  /** The peer's score now (0 for one never seen). */
  score(peer: string): number {
    const entry = this.#scores.get(peer);
    if (!entry) return 0;
    return entry.score * 0.5 ** ((this.#now() - entry.atMs) / HALF_LIFE_MS);
  }

  trusted(peer: string): boolean {
    return this.score(peer) >= DISTRUST_BELOW && this.reportedBy(peer) < HEARSAY_QUORUM;
  }

  /** Peers with a score that still counts (|score| >= 0.5), rounded, for the status. */
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const peer of this.#scores.keys()) {
      const score = this.score(peer);
      if (Math.abs(score) >= 0.5) out[peer] = Math.round(score * 10) / 10;
    }
    return out;
  }

  /** How many peers are distrusted now (on this node's own word or its peers'). */
  distrusted(): number {
    const peers = new Set([...this.#scores.keys(), ...this.#accusers.keys()]);
    let n = 0;
    for (const peer of peers) if (!this.trusted(peer)) n++;
    return n;
  }

  /** For the status: each node peers report distrusted, with how many (trusted, fresh) reporters. */
  reported(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const peer of this.#accusers.keys()) out[peer] = this.reportedBy(peer);
    for (const peer of Object.keys(out)) if (out[peer] === 0) delete out[peer];
    return out;
  }

  #pruneHeard(): void {
    const horizon = this.#now() - this.#hearsayTtlMs;
    for (const [reporter, report] of this.#heard)
      if (report.atMs < horizon) {
        this.#heard.delete(reporter);
        this.#unindex(reporter, report.nodes);
      }
  }

  /**
   * The clock's time. When it went back since the last call (the clock was set back), whatever is
   * dated after it is moved to it: ages then count from the jump, so a score neither grows nor stays
   * frozen, and a report does not stay fresh, until the clock is back where it was.
   */
  #now(): number {
    const now = this.#clock.now();
    if (now < this.#lastNow) {
      for (const entry of [...this.#scores.values(), ...this.#heard.values()])
        if (entry.atMs > now) entry.atMs = now;
    }
    this.#lastNow = now;
    return now;
  }

  #prune(): void {
    for (const peer of [...this.#scores.keys()])
      if (Math.abs(this.score(peer)) < 0.5) this.#scores.delete(peer);
  }
}
