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
 * A decaying score per peer from outcomes this node verified itself: a chunk that failed its digest,
 * a manifest no node vouches for, a failed or timed-out call, a good batch. Peers below
 * DISTRUST_BELOW are not chosen to fetch from until their score has faded above it.
 */
export class Reputation {
  readonly #clock: Clock;
  readonly #scores = new Map<string, { score: number; atMs: number }>();

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  record(peer: string, outcome: PeerOutcome): void {
    const now = this.#clock.now();
    const score = Math.min(MAX_SCORE, Math.max(MIN_SCORE, this.score(peer) + WEIGHTS[outcome]));
    if (this.#scores.size >= 10_000 && !this.#scores.has(peer)) this.#prune();
    this.#scores.set(peer, { score, atMs: now });
  }

  /** The peer's score now (0 for one never seen). */
  score(peer: string): number {
    const entry = this.#scores.get(peer);
    if (!entry) return 0;
    return entry.score * 0.5 ** ((this.#clock.now() - entry.atMs) / HALF_LIFE_MS);
  }

  trusted(peer: string): boolean {
    return this.score(peer) >= DISTRUST_BELOW;
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

  /** How many peers are distrusted now. */
  distrusted(): number {
    let n = 0;
    for (const peer of this.#scores.keys()) if (!this.trusted(peer)) n++;
    return n;
  }

  #prune(): void {
    for (const peer of [...this.#scores.keys()])
      if (Math.abs(this.score(peer)) < 0.5) this.#scores.delete(peer);
  }
}
