/**
 * The geo cost order for choosing where to get bytes from: same node, then same zone, then same
 * region, then anywhere (the standard topology.kubernetes.io labels), and within a class the lowest
 * round trip (measured, else estimated from network coordinates), inflated by how busy the holder is.
 */

import { HOP_CLASSES, type HopClass } from '../domain.ts';

export interface Place {
  readonly id: string;
  readonly zone: string;
  readonly region: string;
}

export interface Candidate extends Place {
  /** Round trip in ms, measured or estimated; undefined when nothing is known. */
  readonly rttMs?: number | undefined;
  /** Share of its upload capacity in use, 0 (idle) to 1 (saturated). */
  readonly load?: number | undefined;
}

/**
 * How far `peer` is from `self` by topology alone. An empty label is unknown and never counts as a
 * match: two nodes without zone labels are not assumed to share a zone.
 */
export function hopClass(self: Place, peer: Place): HopClass {
  if (peer.id === self.id) return 'node';
  const sameRegion = self.region !== '' && self.region === peer.region;
  if (sameRegion && self.zone !== '' && self.zone === peer.zone) return 'zone';
  if (sameRegion) return 'region';
  return 'remote';
}

/** RTT assumed for a candidate nothing is known about: after every measured one in its class. */
const UNKNOWN_RTT_MS = 1e6;

/** Effective cost within a hop class: the round trip, doubled at full load. */
function cost(candidate: Candidate): number {
  const load = Math.min(1, Math.max(0, candidate.load ?? 0));
  return (candidate.rttMs ?? UNKNOWN_RTT_MS) * (1 + load);
}

/** `candidates` cheapest first; ties keep a stable order by id. */
export function rankByCost<C extends Candidate>(self: Place, candidates: readonly C[]): C[] {
  const classOf = (c: C) => HOP_CLASSES.indexOf(hopClass(self, c));
  return [...candidates].sort(
    (a, b) => classOf(a) - classOf(b) || cost(a) - cost(b) || (a.id < b.id ? -1 : 1),
  );
}
