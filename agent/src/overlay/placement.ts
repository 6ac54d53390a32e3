import { createHash } from 'node:crypto';

/** A node as placement sees it. */
export interface PlacementNode {
  readonly id: string;
  readonly zone: string;
  readonly region: string;
  /** Relative capacity for owning keys; 0 never owns (battery, metered or draining nodes). */
  readonly weight: number;
}

/** Two 32-bit halves of a stable hash, enough for a 52-bit uniform draw. */
type Hash64 = readonly [number, number];

function hash64(text: string): Hash64 {
  const d = createHash('sha256').update(text).digest();
  return [d.readUInt32LE(0), d.readUInt32LE(4)];
}

/** MurmurHash3's 32-bit finaliser: a bijective mix with full avalanche. */
function fmix32(value: number): number {
  let h = value >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A uniform draw in (0, 1) for the pair (key, node), from their precomputed hashes. */
function unitDraw(key: Hash64, node: Hash64): number {
  const high = fmix32(key[0] ^ node[0]) * 2 ** 21; // 32 bits
  const low = fmix32(key[1] ^ node[1] ^ 0x9e3779b9) >>> 11; // 21 bits
  return (high + low + 0.5) / 2 ** 53;
}

/**
 * Capacity-weighted rendezvous hashing (highest random weight; the logarithmic method of
 * Schindelhauer and Schomaker): every node scores every key with weight / -ln(draw), and a key's
 * owners are the top scorers, so node i owns a share weight_i / total of the keys. Finding a key's
 * owners needs only the membership (one hop, no walk), and a membership change moves only the keys
 * whose top set includes the node that came or went: about R/N of them.
 *
 * Owners are spread: the top scorer always wins; each next owner is the best scorer from a region not
 * yet used, else from a zone not yet used, else the best left. Spread is decided in score order, so
 * it is as stable as the scores are.
 */
export class Placement {
  readonly #nodes: readonly { node: PlacementNode; hash: Hash64 }[];

  constructor(nodes: Iterable<PlacementNode>) {
    const byId = new Map<string, PlacementNode>();
    for (const node of nodes) {
      if (!(node.weight >= 0 && Number.isFinite(node.weight)))
        throw new RangeError(`bad weight for ${node.id}`);
      byId.set(node.id, node);
    }
    this.#nodes = [...byId.values()]
      .filter((node) => node.weight > 0)
      .map((node) => ({ node, hash: hash64(`node\0${node.id}`) }));
  }

  get size(): number {
    return this.#nodes.length;
  }

  /** Every eligible node ordered by its score for `key`, best first. */
  ranked(key: string): PlacementNode[] {
    const k = hash64(`key\0${key}`);
    return this.#nodes
      .map(({ node, hash }) => ({ node, score: node.weight / -Math.log(unitDraw(k, hash)) }))
      .sort((a, b) => b.score - a.score || (a.node.id < b.node.id ? -1 : 1))
      .map(({ node }) => node);
  }

  /** The `replicas` owners of `key` (fewer when fewer nodes are eligible), spread over regions and zones. */
  owners(key: string, replicas: number): PlacementNode[] {
    const ranked = this.ranked(key);
    const chosen: PlacementNode[] = [];
    const regions = new Set<string>();
    const zones = new Set<string>();
    const take = (node: PlacementNode) => {
      chosen.push(node);
      regions.add(node.region);
      zones.add(`${node.region}/${node.zone}`);
    };
    const passes: ((node: PlacementNode) => boolean)[] = [
      (node) => !regions.has(node.region),
      (node) => !zones.has(`${node.region}/${node.zone}`),
      () => true,
    ];
    while (chosen.length < Math.min(replicas, ranked.length)) {
      const left = ranked.filter((node) => !chosen.includes(node));
      const next = chosen.length === 0 ? left[0] : passes.map((fits) => left.find(fits)).find(Boolean);
      take(next!);
    }
    return chosen;
  }
}
