import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Placement, type PlacementNode } from './placement.ts';

/** 3 regions x 3 zones x `perZone` nodes. */
function grid(perZone: number, weight = () => 1): PlacementNode[] {
  const nodes: PlacementNode[] = [];
  for (const region of ['eu', 'us', 'ap']) {
    for (const zone of ['a', 'b', 'c']) {
      for (let i = 0; i < perZone; i++)
        nodes.push({ id: `${region}-${zone}-${i}`, zone, region, weight: weight() });
    }
  }
  return nodes;
}

const keys = Array.from({ length: 3000 }, (_, i) => `objects/${i}`);

describe('Placement', () => {
  it('is deterministic, whatever the order nodes arrive in', () => {
    const nodes = grid(2);
    const a = new Placement(nodes);
    const b = new Placement([...nodes].reverse());
    for (const key of keys.slice(0, 200)) {
      assert.deepEqual(
        a.owners(key, 3).map((n) => n.id),
        b.owners(key, 3).map((n) => n.id),
      );
    }
  });

  it('spreads owners over regions first, then zones', () => {
    const p = new Placement(grid(2));
    for (const key of keys.slice(0, 500)) {
      assert.equal(new Set(p.owners(key, 3).map((n) => n.region)).size, 3, key);
      const six = p.owners(key, 6);
      assert.equal(new Set(six.map((n) => `${n.region}/${n.zone}`)).size, 6, key);
    }
    const oneRegion = new Placement(grid(2).filter((n) => n.region === 'eu'));
    for (const key of keys.slice(0, 200)) {
      assert.equal(new Set(oneRegion.owners(key, 3).map((n) => n.zone)).size, 3, 'zones when one region');
    }
  });

  it('gives each node a share of first ownership in proportion to its weight', () => {
    const nodes = grid(1).map((n, i) => ({ ...n, weight: i < 3 ? 3 : 1 })); // 3 strong, 6 weak
    const p = new Placement(nodes);
    const firsts = new Map<string, number>();
    for (const key of keys) {
      const first = p.ranked(key)[0]!.id;
      firsts.set(first, (firsts.get(first) ?? 0) + 1);
    }
    const total = 3 * 3 + 6;
    for (const [i, node] of nodes.entries()) {
      const expected = (keys.length * node.weight) / total;
      const got = firsts.get(node.id) ?? 0;
      assert.ok(
        Math.abs(got - expected) < 0.25 * expected,
        `${node.id} (${i}): ${got} vs ~${expected.toFixed(0)}`,
      );
    }
  });

  it('never picks a node of weight 0 and returns fewer owners when too few nodes remain', () => {
    const nodes = grid(1).map((n) => ({ ...n, weight: n.region === 'ap' ? 0 : 1 }));
    const p = new Placement(nodes);
    assert.equal(p.size, 6);
    for (const key of keys.slice(0, 300)) assert.ok(p.owners(key, 3).every((n) => n.region !== 'ap'));
    assert.equal(new Placement(grid(1).slice(0, 2)).owners('k', 3).length, 2);
    assert.deepEqual(new Placement([]).owners('k', 3), []);
    assert.throws(() => new Placement([{ id: 'x', zone: 'a', region: 'r', weight: -1 }]), RangeError);
  });

  it('moves only about R/N of the keys when a node joins or leaves', () => {
    const nodes = grid(3); // 27 nodes
    const before = new Placement(nodes);
    const joined = new Placement([...nodes, { id: 'eu-a-new', zone: 'a', region: 'eu', weight: 1 }]);
    const left = new Placement(nodes.filter((n) => n.id !== 'us-b-1'));
    const R = 3;
    for (const [name, after, n] of [
      ['join', joined, 28],
      ['leave', left, 27],
    ] as const) {
      let moved = 0;
      for (const key of keys) {
        const x = before
          .owners(key, R)
          .map((o) => o.id)
          .sort()
          .join();
        const y = after
          .owners(key, R)
          .map((o) => o.id)
          .sort()
          .join();
        if (x !== y) moved++;
      }
      const fraction = moved / keys.length;
      assert.ok(
        fraction <= (2 * R) / n,
        `${name}: ${(fraction * 100).toFixed(1)}% of keys moved (ideal ~${((R / n) * 100).toFixed(1)}%)`,
      );
    }
  });
});
