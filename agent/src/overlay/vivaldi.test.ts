import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CC,
  DIMENSIONS,
  ERROR_MAX,
  ERROR_MIN,
  estimateRtt,
  LATENCY_FILTER_SIZE,
  origin,
  Vivaldi,
} from './vivaldi.ts';
import { seeded } from '../../harness/seeded.ts';

/**
 * 3 regions x 3 zones x 2 nodes: regions far apart on a plane, zones a few ms apart within a region,
 * plus a per-node access delay. RTT is the round trip over that geometry.
 */
function topology(random: () => number) {
  const regions = [
    [0, 0],
    [40, 0],
    [20, 35],
  ];
  const nodes: { id: string; x: number; y: number; access: number }[] = [];
  regions.forEach(([rx, ry], r) => {
    for (let z = 0; z < 3; z++) {
      for (let n = 0; n < 2; n++) {
        nodes.push({
          id: `r${r}z${z}n${n}`,
          x: rx! + 3 * z + random(),
          y: ry! + 2 * z + random(),
          access: 0.5 + random(),
        });
      }
    }
  });
  const rtt = (a: (typeof nodes)[number], b: (typeof nodes)[number]) =>
    2 * Math.hypot(a.x - b.x, a.y - b.y) + a.access + b.access;
  return { nodes, rtt };
}

describe('Vivaldi', () => {
  it('learns coordinates whose estimates match measured RTTs (median error under 15%)', () => {
    const random = seeded(7);
    const { nodes, rtt } = topology(random);
    const clients = new Map(nodes.map((n) => [n.id, new Vivaldi(random)]));
    for (let round = 0; round < 400; round++) {
      for (const a of nodes) {
        const b = nodes[Math.floor(random() * nodes.length)]!;
        if (a === b) continue;
        const noisy = rtt(a, b) * (1 + 0.05 * (random() - 0.5));
        clients.get(a.id)!.update(b.id, noisy, clients.get(b.id)!.coordinate);
      }
    }
    const errors: number[] = [];
    for (const a of nodes) {
      for (const b of nodes) {
        if (a === b) continue;
        const estimate = clients.get(a.id)!.estimate(clients.get(b.id)!.coordinate);
        errors.push(Math.abs(estimate - rtt(a, b)) / rtt(a, b));
      }
    }
    errors.sort((x, y) => x - y);
    const median = errors[Math.floor(errors.length / 2)]!;
    console.log(
      `# vivaldi: median relative RTT error ${(median * 100).toFixed(1)}% over ${errors.length} pairs`,
    );
    assert.ok(median < 0.15, `median relative error ${(median * 100).toFixed(1)}%`);
    // And the order that matters for choosing holders: same zone < same region < other region.
    const me = clients.get('r0z0n0')!;
    const to = (id: string) => me.estimate(clients.get(id)!.coordinate);
    assert.ok(to('r0z0n1') < to('r0z2n0'), 'same zone closer than another zone');
    assert.ok(to('r0z2n0') < to('r1z0n0'), 'same region closer than another region');
  });

  it('ignores samples and coordinates that would poison it', () => {
    const v = new Vivaldi(seeded(1));
    const good = { vec: new Array<number>(DIMENSIONS).fill(1), height: 1, error: 0.5 };
    assert.equal(v.update('p', Number.NaN, good), false);
    assert.equal(v.update('p', -3, good), false);
    assert.equal(v.update('p', Infinity, good), false);
    assert.equal(v.update('p', 10, { ...good, vec: [1, 2] }), false);
    assert.equal(v.update('p', 10, { ...good, height: Number.NaN }), false);
    // Finite but huge: squared it is infinity, and this node's coordinate would become NaN.
    assert.equal(v.update('p', 10, { ...good, vec: new Array<number>(DIMENSIONS).fill(1e200) }), false);
    assert.equal(v.update('p', 10, { ...good, height: 1e200 }), false);
    assert.equal(v.update('p', 1e300, good), false);
    assert.deepEqual(v.coordinate, origin());
    assert.equal(v.update('p', 10, good), true);
    assert.ok(v.coordinate.vec.every(Number.isFinite));
    assert.ok(estimateRtt(v.coordinate, good) > 0);
  });

  it('filters RTT over the last few samples only: a lasting change of RTT is followed', () => {
    const v = new Vivaldi(seeded(3));
    const peer = { vec: new Array<number>(DIMENSIONS).fill(0), height: 1, error: 0.2 };
    for (let i = 0; i < 100; i++) v.update('p', 10, peer);
    assert.ok(Math.abs(v.estimate(peer) - 10) < 1, `learnt ${v.estimate(peer)} ms for 10 ms`);
    // The path gets slower and stays so: after a filter's worth of samples the median is the new
    // RTT (a filter that kept every sample would hold on to 10 ms for another 100 samples).
    for (let i = 0; i < LATENCY_FILTER_SIZE + 20; i++) v.update('p', 100, peer);
    assert.ok(v.estimate(peer) > 80, `still ${v.estimate(peer).toFixed(1)} ms after a move to 100 ms`);
    // forget() drops the samples: the next one stands alone.
    v.forget('p');
    const before = v.estimate(peer);
    v.update('p', 10, peer);
    assert.ok(v.estimate(peer) < before, 'a sample after forget() is not outvoted by old ones');
  });

  it('moves a node by how unsure it is relative to its peer', () => {
    const at = (error: number) => ({ vec: new Array<number>(DIMENSIONS).fill(0), height: 0.01, error });
    // A new node (error ERROR_MAX) measuring a sure peer moves nearly CC of the way to the RTT.
    const fresh = new Vivaldi(seeded(5));
    fresh.update('p', 100, at(0.01));
    const weight = ERROR_MAX / (ERROR_MAX + ERROR_MIN); // a peer is never surer than ERROR_MIN
    const moved = fresh.estimate(at(0.01));
    assert.ok(Math.abs(moved - (0.02 + CC * weight * (100 - 0.02))) < 0.01, `moved to ${moved} ms`);
    // A sure node measuring a new peer that is far off hardly moves: the peer's own place is a guess.
    const sure = new Vivaldi(seeded(5));
    for (let i = 0; i < 200; i++) sure.update('p', 10, at(0.01));
    assert.equal(sure.coordinate.error, ERROR_MIN, 'a node that fits every sample is as sure as can be');
    const settled = sure.coordinate;
    sure.update('q', 10_000, at(ERROR_MAX));
    const shift = Math.hypot(...sure.coordinate.vec.map((x, i) => x - settled.vec[i]!));
    assert.ok(
      shift < 0.1 * CC * (10_000 - 10),
      `a sure node moved ${shift.toFixed(1)} ms for an unsure peer`,
    );
  });

  it("gives a peer that claims to be sure (error 0) no more than an equal share of a settled node's move", () => {
    const at = (error: number) => ({ vec: new Array<number>(DIMENSIONS).fill(0), height: 0.01, error });
    const sure = new Vivaldi(seeded(9));
    for (let i = 0; i < 200; i++) sure.update('p', 10, at(0.2));
    assert.equal(sure.coordinate.error, ERROR_MIN);
    const settled = sure.coordinate;
    const dist = sure.estimate(at(0));
    // A liar at error 0 says it is 10 s away: with full weight this node would move CC of the way.
    sure.update('liar', 10_000, at(0));
    const moved = Math.hypot(...sure.coordinate.vec.map((x, i) => x - settled.vec[i]!));
    assert.ok(
      moved <= CC * 0.5 * (10_000 - dist) + 1e-6,
      `moved ${moved.toFixed(0)} ms of ${(10_000 - dist).toFixed(0)} toward a liar claiming error 0`,
    );
    assert.ok(moved > 0, 'it still counts as a sample');
  });
});
