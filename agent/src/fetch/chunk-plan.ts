/**
 * Which chunk to ask of which peer: the pure core of a download (download.ts does the asking). No
 * I/O, no timers, no clock of its own: the same state gives the same plan (given the same `random`).
 */

/** Chunks asked of a whole holder per call when no swarm is about. */
export const BATCH_CHUNKS = 8;
/** Chunk requests outstanding to one peer (one being sent, one queued behind it). */
export const PER_SOURCE = 2;
/** Chunk requests outstanding in total, per download. */
export const MAX_IN_FLIGHT = 8;
/**
 * How long a chunk that only farther holders have waits for the member of this node's zone or region
 * chosen to bring it in, before this node fetches it from afar itself.
 */
export const IMPORT_WAIT_MS = 3000;

/** What the planner needs to know of a peer a download may get chunks from. */
export interface PlanSource {
  /** Its node id (for choosing importers). */
  readonly id: string;
  /** What it has: everything, or chunk by chunk (as its Watch says). */
  readonly has: Uint8Array | 'all';
  /** Hop class index (same zone 1, same region 2, elsewhere 3): lower is cheaper. */
  readonly cls: number;
  /** Its rank among holders (cheapest first, as the overlay ranked them). */
  readonly rank: number;
  /** Its requests under way. */
  readonly inFlight: number;
  /** It failed: never asked again. */
  readonly dead: boolean;
  /** It said it is busy: not asked before this time (the same clock as `now`). */
  readonly busyUntil: number;
  /** It is a straggler (far behind with what it was asked; the caller judges): asked nothing new. */
  readonly straggling?: boolean;
  /**
   * How many chunks more than it owes it would deliver soon enough to be waited for (the caller
   * judges; undefined: not known). Farther holders leave that many of a straggler's chunks to it in
   * the endgame.
   */
  readonly reach?: number;
}

export interface ChunkPlanInput<S extends PlanSource> {
  /** The object's key (importers are chosen per key and chunk). */
  readonly key: string;
  /** Chunks 0..known-1 have known digests: only those can be asked for. */
  readonly known: number;
  /** verified[i] = 1: chunk i is here. */
  readonly verified: Uint8Array;
  /** assigned[i] > 0: chunk i is asked of someone already (2: of two holders). */
  readonly assigned: Uint8Array;
  /**
   * Chunks asked of a straggler alone, and its id: once no wanted chunk is left that a holder could
   * be asked for, each may be asked once more, of another holder that is no straggler.
   */
  readonly stragglers?: ReadonlyMap<number, string>;
  readonly sources: readonly S[];
  /** Requests under way that count against MAX_IN_FLIGHT (the download leaves out stragglers' calls). */
  readonly inFlight: number;
  /** An owner is still getting the object from its origin (a swarm forms behind it). */
  readonly fromOrigin: boolean;
  readonly now: number;
  /**
   * This node's id, and the chunks already left to a nearer importer (since when) and when the last
   * chunk arrived: without it, nothing is left to importers.
   */
  readonly importer?: {
    readonly self: string;
    readonly deferred: ReadonlyMap<number, number>;
    readonly lastChunkAt: number;
  };
  /** Breaks ties among the rarest chunks in a swarm; Math.random by default. */
  readonly random?: () => number;
}

export interface ChunkPlan<S extends PlanSource> {
  /** Calls to make now: chunk indexes (consecutive, in order) to ask of each source. */
  readonly requests: { source: S; indexes: number[] }[];
  /** Chunks left to a nearer importer for the first time now (the caller records when). */
  readonly deferred: number[];
  /** Sources not dead (busy ones included). */
  readonly alive: number;
}

/** FNV-1a: a cheap, stable 32-bit hash for choosing importers. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * Whether chunk `index` of `key` is this node's to bring in from afar, among the swarm members
 * nearer than its holders: the member (this node included) that scores highest by rendezvous
 * hashing.
 */
export function isImporter(key: string, index: number, self: string, nearer: readonly string[]): boolean {
  const score = (id: string) => fnv1a(`${key}\0${index}\0${id}`);
  const mine = score(self);
  return nearer.every((id) => score(id) < mine);
}

/**
 * Hands out chunk requests: each wanted chunk goes to the cheapest hop class that has it, rarest
 * first within it, at most PER_SOURCE requests per peer and MAX_IN_FLIGHT in all. From whole holders
 * with no swarm about, a run of chunks per call (in order, so a reader's first bytes come first, and
 * no more than a fair share per holder); in a swarm, one chunk per call, ties broken at random so
 * members start on different chunks. A chunk only farther holders have is left to the importer of
 * this node's zone or region (see isImporter) for IMPORT_WAIT_MS, counted from when it was first
 * left or the last chunk arrived, whichever is later. A straggler is asked nothing new; once no
 * wanted chunk is left to hand out, holders with room take a straggler's chunks (nearer holders
 * first): an endgame, as BitTorrent's, so one slow or stalling holder cannot hold the download to
 * its pace while others stand idle. A farther holder leaves to a nearer one the straggler's chunks
 * that one will get to soon (its `reach`, as the caller judges it): a second copy crosses zones or
 * regions only for the chunks no nearer holder would bring soon.
 */
export function planChunks<S extends PlanSource>(input: ChunkPlanInput<S>): ChunkPlan<S> {
  const { known, verified, now } = input;
  const random = input.random ?? Math.random;
  const assigned = Uint8Array.from(input.assigned);
  const all = input.sources.filter((s) => !s.dead);
  const live = all.filter((s) => s.busyUntil <= now && !s.straggling);
  const wanted: number[] = [];
  for (let i = 0; i < known; i++) if (!verified[i] && !assigned[i]) wanted.push(i);
  const has = (s: PlanSource, i: number) => s.has === 'all' || s.has[i] === 1;
  const count = new Map<number, number>();
  const best = new Map<number, number>();
  for (const i of wanted) {
    for (const s of live) {
      if (!has(s, i)) continue;
      count.set(i, (count.get(i) ?? 0) + 1);
      best.set(i, Math.min(best.get(i) ?? Infinity, s.cls));
    }
  }
  const deferred = input.importer ? deferImports(input, input.importer, wanted, best, all) : [];
  const inFlight = new Map(live.map((s) => [s, s.inFlight]));
  live.sort((a, b) => a.cls - b.cls || a.inFlight - b.inFlight || a.rank - b.rank);
  const spread = input.fromOrigin || live.some((s) => s.has !== 'all');
  const requests: { source: S; indexes: number[] }[] = [];
  /** Chunks asked of each holder in this plan. */
  const asked = new Map<S, number>();
  let total = input.inFlight;
  // The endgame: nothing wanted is left that a holder could be asked for.
  const endgame = () => wanted.every((i) => assigned[i] || !best.has(i));
  for (const s of live) {
    while (inFlight.get(s)! < PER_SOURCE && total < MAX_IN_FLIGHT) {
      let pick: number | undefined;
      let pickCount = Infinity;
      let ties = 0;
      for (const i of wanted) {
        if (assigned[i] || best.get(i) !== s.cls || !has(s, i)) continue;
        const c = count.get(i)!;
        if (c < pickCount) {
          pick = i;
          pickCount = c;
          ties = 1;
        } else if (c === pickCount && spread && random() * ++ties < 1) {
          pick = i; // a random one among the rarest: swarm members start on different chunks
        }
      }
      const indexes =
        pick !== undefined
          ? [pick]
          : endgame()
            ? overtake(
                s,
                input.stragglers,
                assigned,
                spread,
                leftToNearer(s, live, input.stragglers, assigned, asked),
              )
            : [];
      if (indexes.length === 0) break;
      if (pick !== undefined && !spread && s.has === 'all') {
        const share = Math.ceil(wanted.length / (live.length * PER_SOURCE));
        const most = Math.min(BATCH_CHUNKS, share);
        for (let i = pick + 1; indexes.length < most && i < known; i++) {
          if (verified[i] || assigned[i] || best.get(i) !== s.cls) break;
          indexes.push(i);
        }
      }
      for (const i of indexes) assigned[i] = assigned[i]! + 1;
      asked.set(s, (asked.get(s) ?? 0) + indexes.length);
      inFlight.set(s, inFlight.get(s)! + 1);
      total++;
      requests.push({ source: s, indexes });
    }
  }
  return { requests, deferred, alive: all.length };
}

/**
 * The straggler's chunks `s` asks for a second time: the first it has, another holder was asked for
 * and not left to a nearer holder (`left`), then (from a whole holder, with no swarm about) the run
 * after it of the same straggler, up to BATCH_CHUNKS. Marks nothing; the caller does.
 */
function overtake(
  s: PlanSource,
  stragglers: ReadonlyMap<number, string> | undefined,
  assigned: Uint8Array,
  spread: boolean,
  left: ReadonlySet<number>,
): number[] {
  if (!stragglers) return [];
  const takes = (i: number, from: string) =>
    stragglers.get(i) === from && assigned[i] === 1 && !left.has(i) && (s.has === 'all' || s.has[i] === 1);
  let first: number | undefined;
  for (const [i, from] of stragglers)
    if (from !== s.id && takes(i, from) && (first === undefined || i < first)) first = i;
  if (first === undefined) return [];
  const from = stragglers.get(first)!;
  const indexes = [first];
  if (!spread && s.has === 'all')
    for (let i = first + 1; indexes.length < BATCH_CHUNKS && takes(i, from); i++) indexes.push(i);
  return indexes;
}

/**
 * The stragglers' chunks that live holders nearer than `s` will get to soon: up to each one's
 * `reach` (less what this plan asked of it already), lowest first, as they take them; never a
 * holder's own (it could not take those).
 */
function leftToNearer<S extends PlanSource>(
  s: S,
  live: readonly S[],
  stragglers: ReadonlyMap<number, string> | undefined,
  assigned: Uint8Array,
  asked: ReadonlyMap<S, number>,
): Set<number> {
  const left = new Set<number>();
  if (!stragglers) return left;
  const open = [...stragglers.keys()].filter((i) => assigned[i] === 1).sort((a, b) => a - b);
  for (const o of live) {
    if (o.cls >= s.cls || !o.reach) continue;
    let room = o.reach - (asked.get(o) ?? 0);
    for (const i of open) {
      if (room <= 0) break;
      if (left.has(i) || stragglers.get(i) === o.id || (o.has !== 'all' && o.has[i] !== 1)) continue;
      left.add(i);
      room--;
    }
  }
  return left;
}

/**
 * Takes out of `best` the chunks left to a nearer importer now; returns those left for the first
 * time. A chunk is taken back once IMPORT_WAIT_MS passed without progress (the importer may be slow
 * or gone).
 */
function deferImports(
  input: ChunkPlanInput<PlanSource>,
  importer: NonNullable<ChunkPlanInput<PlanSource>['importer']>,
  wanted: readonly number[],
  best: Map<number, number>,
  all: readonly PlanSource[],
): number[] {
  const fresh: number[] = [];
  for (const i of wanted) {
    const cls = best.get(i);
    if (cls === undefined) continue;
    const nearer = all.filter((s) => s.cls < cls && s.has !== 'all').map((s) => s.id);
    if (nearer.length === 0 || isImporter(input.key, i, importer.self, nearer)) continue;
    const since = importer.deferred.get(i);
    if (since === undefined) fresh.push(i);
    // Left to the importer while this download keeps getting chunks; taken back once it stalls.
    if (since === undefined || input.now - Math.max(since, importer.lastChunkAt) < IMPORT_WAIT_MS)
      best.delete(i);
  }
  return fresh;
}
