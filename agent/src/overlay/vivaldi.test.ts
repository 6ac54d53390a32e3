import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DIMENSIONS, estimateRtt, origin, Vivaldi } from './vivaldi.ts';

/** A small deterministic PRNG (mulberry32), so the test is the same every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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
});
