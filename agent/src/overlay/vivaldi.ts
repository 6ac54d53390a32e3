/**
 * Vivaldi network coordinates (Dabek et al., SIGCOMM 2004) with the height vector and adaptive
 * timestep of Serf's implementation: each node keeps a point in a low-dimensional space plus a height
 * (its access-link delay) and an error estimate. After measuring the RTT to a peer whose coordinate it
 * knows, a node moves so the estimated distance fits the RTT better, moving more when it is less sure
 * of itself than the peer is. The estimate to any node whose coordinate is known needs no measurement.
 */

import type { Coordinate } from '../domain.ts';

/** Space dimensions (Serf uses 8; the height carries the rest). */
export const DIMENSIONS = 8;
/** Largest error estimate; new nodes start here. */
export const ERROR_MAX = 1.5;
/**
 * Smallest error estimate, this node's and what a peer claims: a peer that says it is sure (error 0)
 * would otherwise get all the weight of every sample (this node moves the whole way to where the liar
 * says it fits), and a node whose own error reached 0 would never move again.
 */
export const ERROR_MIN = 0.05;
/** How quickly the error estimate follows new samples. */
export const CE = 0.25;
/** How far a node moves per sample, at most. */
export const CC = 0.25;
/** Smallest height (ms). */
export const HEIGHT_MIN = 0.01;
/** RTT samples per peer kept for the median filter (damps one-off spikes). */
export const LATENCY_FILTER_SIZE = 3;
/**
 * No coordinate component or height, and no RTT sample, exceeds this many ms (a day): finite
 * values beyond it (a peer's 1e200) square to infinity and would turn this node's coordinate NaN.
 */
export const COORDINATE_MAX = 86_400_000;

export function origin(): Coordinate {
  return { vec: new Array<number>(DIMENSIONS).fill(0), height: HEIGHT_MIN, error: ERROR_MAX };
}

/** Estimated RTT in ms between two coordinates. */
export function estimateRtt(a: Coordinate, b: Coordinate): number {
  let sum = 0;
  for (let i = 0; i < a.vec.length; i++) sum += (a.vec[i]! - (b.vec[i] ?? 0)) ** 2;
  return Math.sqrt(sum) + a.height + b.height;
}

const bounded = (x: number) => Number.isFinite(x) && Math.abs(x) <= COORDINATE_MAX;

function isValid(c: Coordinate): boolean {
  return (
    c.vec.length === DIMENSIONS &&
    c.vec.every(bounded) &&
    bounded(c.height) &&
    c.height >= 0 &&
    Number.isFinite(c.error) &&
    c.error >= 0
  );
}

/** One node's coordinate, updated from RTT samples. `random` picks a direction when two points coincide. */
export class Vivaldi {
  #coord: Coordinate = origin();
  readonly #samples = new Map<string, number[]>();
  readonly #random: () => number;

  constructor(random: () => number = Math.random) {
    this.#random = random;
  }

  get coordinate(): Coordinate {
    return this.#coord;
  }

  /**
   * Folds in a measured RTT (ms) to `peer`, whose coordinate is `remote`. Samples that are not finite
   * and positive, and remote coordinates that are malformed, are ignored (false), so a lying or broken
   * peer cannot push this node to NaN or infinity.
   */
  update(peer: string, rttMs: number, remote: Coordinate): boolean {
    if (!(rttMs > 0 && bounded(rttMs)) || !isValid(remote)) return false;
    const samples = this.#samples.get(peer) ?? [];
    samples.push(rttMs);
    if (samples.length > LATENCY_FILTER_SIZE) samples.shift();
    this.#samples.set(peer, samples);
    const rtt = [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)]!;

    const self = this.#coord;
    const dist = estimateRtt(self, remote);
    const weight = self.error / (self.error + Math.max(remote.error, ERROR_MIN));
    const relativeError = Math.abs(dist - rtt) / rtt;
    const error = Math.min(
      ERROR_MAX,
      Math.max(ERROR_MIN, CE * weight * relativeError + self.error * (1 - CE * weight)),
    );
    const force = CC * weight * (rtt - dist);

    const diff = self.vec.map((x, i) => x - remote.vec[i]!);
    let magnitude = Math.sqrt(diff.reduce((s, d) => s + d * d, 0));
    let unit: number[];
    if (magnitude > 1e-6) unit = diff.map((d) => d / magnitude);
    else {
      const randomVec = diff.map(() => this.#random() - 0.5);
      const m = Math.sqrt(randomVec.reduce((s, d) => s + d * d, 0)) || 1;
      unit = randomVec.map((d) => d / m);
      magnitude = 0;
    }
    const vec = self.vec.map((x, i) => x + unit[i]! * force);
    let height = self.height;
    if (magnitude > 1e-6)
      height = Math.max(HEIGHT_MIN, ((self.height + remote.height) * force) / magnitude + self.height);
    const next = { vec, height, error };
    // Whatever the inputs did, this node's coordinate stays one that can be announced.
    if (!isValid(next)) return false;
    this.#coord = next;
    return true;
  }

  /** Estimated RTT in ms from this node to a node at `remote`. */
  estimate(remote: Coordinate): number {
    return estimateRtt(this.#coord, remote);
  }

  forget(peer: string): void {
    this.#samples.delete(peer);
  }
}
