import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzSetting } from '../../harness/fuzz.ts';
import {
  BATCH_CHUNKS,
  type ChunkPlanInput,
  IMPORT_WAIT_MS,
  isImporter,
  MAX_IN_FLIGHT,
  PER_SOURCE,
  type PlanSource,
  planChunks,
} from './chunk-plan.ts';

const ZONE = 1;
const REMOTE = 3;

function source(
  id: string,
  cls: number,
  has: 'all' | number[] = 'all',
  extra: Partial<PlanSource> = {},
): PlanSource {
  let bits: PlanSource['has'] = 'all';
  if (has !== 'all') {
    bits = new Uint8Array(64);
    for (const i of has) bits[i] = 1;
  }
  return { id, cls, has: bits, rank: 0, inFlight: 0, dead: false, busyUntil: 0, ...extra };
}

function plan(sources: PlanSource[], opts: Partial<ChunkPlanInput<PlanSource>> & { count?: number } = {}) {
  const count = opts.count ?? 16;
  return planChunks({
    key: 'k',
    known: count,
    verified: new Uint8Array(count),
    assigned: new Uint8Array(count),
    sources: sources.map((s, rank) => ({ ...s, rank })),
    inFlight: 0,
    fromOrigin: false,
    now: 10_000,
    random: () => 0.5,
    ...opts,
  });
}

/** Which source is asked for each chunk: index → source id. */
function owners(p: ReturnType<typeof plan>): Map<number, string> {
  const map = new Map<number, string>();
  for (const r of p.requests)
    for (const i of r.indexes) {
      assert.ok(!map.has(i), `chunk ${i} asked twice`);
      map.set(i, r.source.id);
    }
  return map;
}

describe('planChunks', () => {
  it('asks whole holders for runs of chunks in order, a fair share each, within the limits', () => {
    const p = plan([source('a', ZONE), source('b', ZONE)], { count: 64 });
    assert.equal(p.requests.length, 2 * PER_SOURCE, 'PER_SOURCE requests per holder');
    for (const r of p.requests) {
      assert.equal(r.indexes.length, BATCH_CHUNKS, 'a full batch each');
      r.indexes.forEach((i, n) => assert.equal(i, r.indexes[0]! + n, 'consecutive chunks'));
    }
    assert.deepEqual(
      p.requests.map((r) => r.indexes[0]),
      [0, 8, 16, 24],
      'in order, so a reader gets the first bytes first',
    );
    assert.deepEqual(new Set(p.requests.map((r) => r.source.id)), new Set(['a', 'b']), 'both asked');
  });

  it('never has more than MAX_IN_FLIGHT requests or PER_SOURCE per peer under way', () => {
    const many = Array.from({ length: 10 }, (_, i) => source(`p${i}`, ZONE));
    assert.equal(plan(many, { count: 64 }).requests.length, MAX_IN_FLIGHT);
    assert.equal(plan(many, { count: 64, inFlight: MAX_IN_FLIGHT - 1 }).requests.length, 1);
    const busyOne = source('a', ZONE, 'all', { inFlight: PER_SOURCE - 1 });
    assert.equal(plan([busyOne], { count: 64 }).requests.length, 1, 'counts what is under way');
  });

  it('splits a small object between holders rather than giving one holder every chunk', () => {
    const p = plan([source('a', ZONE), source('b', ZONE)], { count: 4 });
    const got = owners(p);
    assert.equal(got.size, 4, 'every chunk asked');
    assert.ok([...got.values()].includes('a') && [...got.values()].includes('b'), [...got].join());
  });

  it('asks each chunk of the cheapest hop class that has it', () => {
    const far = source('far', REMOTE);
    const near = source('near', ZONE, [0, 1, 2, 3]);
    const got = owners(plan([far, near], { count: 8 }));
    for (const [i, id] of got) assert.equal(id, i < 4 ? 'near' : 'far', `chunk ${i}`);
    assert.equal([...got.values()].filter((id) => id === 'near').length, PER_SOURCE, 'near kept busy');
  });

  it('asks for the rarest chunk first in a swarm, one chunk per call', () => {
    const a = source('a', ZONE, [0, 1, 2, 3]);
    const b = source('b', ZONE, [0, 1, 2]);
    const c = source('c', ZONE, [0, 1]);
    const p = plan([a, b, c], { count: 4 });
    assert.ok(
      p.requests.every((r) => r.indexes.length === 1),
      'one chunk per call',
    );
    assert.deepEqual(
      p.requests.filter((r) => r.source.id === 'a').map((r) => r.indexes[0]),
      [3, 2],
      'a: chunk 3 (only a has it), then chunk 2 (two have it)',
    );
    const rest = p.requests.filter((r) => r.source.id !== 'a').map((r) => r.indexes[0]);
    assert.deepEqual(rest.sort(), [0, 1], 'the common chunks go to the others');
  });

  it('breaks ties among the rarest at random in a swarm (members start on different chunks)', () => {
    const members = [source('a', ZONE, [0, 1, 2, 3])];
    const low = plan(members, { count: 4, random: () => 0 }).requests[0]?.indexes[0];
    const high = plan(members, { count: 4, random: () => 0.99 }).requests[0]?.indexes[0];
    assert.notEqual(low, high, 'the random draw decides among equally rare chunks');
    const fromOrigin = plan([source('a', ZONE)], { count: 4, fromOrigin: true, random: () => 0 });
    assert.ok(
      fromOrigin.requests.every((r) => r.indexes.length === 1),
      'behind an origin fetch: a swarm too',
    );
  });

  it('skips what is here, asked for, unknown, or held by dead or busy peers', () => {
    const verified = new Uint8Array(8);
    verified[0] = 1;
    const assigned = new Uint8Array(8);
    assigned[1] = 1;
    const p = plan([source('a', ZONE)], { count: 8, known: 6, verified, assigned });
    const got = owners(p);
    assert.deepEqual([...got.keys()].sort(), [2, 3, 4, 5]);
    assert.equal(assigned[1], 1, 'the input is not changed');
    assert.equal(assigned[2], 0, 'the input is not changed');

    const dead = plan([source('a', ZONE, 'all', { dead: true })]);
    assert.deepEqual([dead.requests.length, dead.alive], [0, 0], 'nobody left: the caller fails');
    const busy = plan([source('a', ZONE, 'all', { busyUntil: 20_000 })]);
    assert.deepEqual([busy.requests.length, busy.alive], [0, 1], 'busy: left alone, not given up');
    const rested = plan([source('a', ZONE, 'all', { busyUntil: 9_000 })]);
    assert.ok(rested.requests.length > 0, 'asked again once its backoff passed');
  });

  it('ends a batch at a chunk a nearer holder has', () => {
    const far = source('far', REMOTE);
    const near = source('near', ZONE, [3]);
    const got = owners(plan([near, far], { count: 8 }));
    assert.equal(got.get(3), 'near');
    const batches = plan([near, far], { count: 8 }).requests.filter((r) => r.source.id === 'far');
    for (const r of batches) assert.ok(!r.indexes.includes(3), `far's batch ${r.indexes.join()} skips 3`);
  });
});

describe('planChunks: stragglers (the endgame)', () => {
  // Chunks 0-7 are here but for 4-7, asked of "slow", which delivers nothing: a straggler.
  const state = () => {
    const verified = new Uint8Array(8);
    const assigned = new Uint8Array(8);
    for (let i = 0; i < 8; i++) (i < 4 ? verified : assigned)[i] = 1;
    const stragglers = new Map([4, 5, 6, 7].map((i) => [i, 'slow']));
    return { count: 8, verified, assigned, stragglers };
  };

  it("gives an idle holder the straggler's chunks, in a run, and never the straggler itself", () => {
    const slow = source('slow', ZONE, 'all', { inFlight: PER_SOURCE });
    const p = plan([slow, source('fast', ZONE)], state());
    assert.deepEqual(
      p.requests.map((r) => [r.source.id, r.indexes]),
      [['fast', [4, 5, 6, 7]]],
      'the run asked once more, of the other holder, in one call',
    );
    const alone = plan([source('slow', ZONE)], state());
    assert.deepEqual(alone.requests, [], 'nobody else to ask: it waits on the straggler');
  });

  it('asks for wanted chunks first; a straggler chunk only when none is left to take', () => {
    const s = state();
    s.verified[2] = 0; // wanted, asked of nobody
    const p = plan([source('slow', ZONE, 'all', { inFlight: PER_SOURCE }), source('fast', ZONE)], s);
    assert.deepEqual(
      p.requests.map((r) => r.indexes),
      [[2], [4, 5, 6, 7]],
      'chunk 2 first, then (its second request) the straggler run',
    );
  });

  it('asks a straggler nothing new, and lets it overtake nobody', () => {
    const s = state();
    s.verified[2] = 0; // wanted
    s.stragglers.set(4, 'other'); // another straggler's chunk
    const slow = source('slow', ZONE, 'all', { inFlight: 1, straggling: true });
    assert.deepEqual(plan([slow], s).requests, [], 'neither the wanted chunk nor the other straggler');
    const p = plan([slow, source('fast', ZONE)], s);
    assert.ok(
      p.requests.every((r) => r.source.id === 'fast'),
      p.requests.map((r) => r.source.id).join(),
    );
  });

  it('overtakes only once no wanted chunk is left that a holder could be asked for', () => {
    const s = state();
    s.verified[2] = 0; // wanted, and only the (full) nearer holder will be asked for it
    const near = source('near', ZONE, 'all', { inFlight: PER_SOURCE });
    const far = source('far', REMOTE);
    assert.deepEqual(plan([near, far], s).requests, [], 'far waits: the download is not at its end');
    s.verified[2] = 1;
    assert.deepEqual(
      plan([near, far], s).requests.map((r) => [r.source.id, r.indexes]),
      [['far', [4, 5, 6, 7]]],
      'at the end, far takes the straggler run',
    );
  });

  it('leaves a nearer holder the straggler chunks within its reach; a farther one takes the rest', () => {
    const slow = source('slow', ZONE, 'all', { inFlight: PER_SOURCE, straggling: true });
    const far = source('far', REMOTE);
    const asks = (near: PlanSource) =>
      plan([slow, near, far], state()).requests.map((r) => [r.source.id, r.indexes]);
    const full = { inFlight: PER_SOURCE }; // near has no room now: it takes them once a call ends
    assert.deepEqual(asks(source('near', ZONE, 'all', { ...full, reach: 2 })), [['far', [6, 7]]]);
    assert.deepEqual(asks(source('near', ZONE, 'all', { ...full, reach: 4 })), [], 'near gets to all four');
    assert.deepEqual(
      asks(source('near', ZONE, [4, 6, 7], { ...full, reach: 2 })),
      [
        ['far', [5]],
        ['far', [7]],
      ],
      'near is left 4 and 6, the first two it has; far takes the others, its run ending at 6',
    );
    assert.deepEqual(
      asks(source('near', ZONE, 'all', { inFlight: 1, reach: 2 })),
      [['near', [4, 5, 6, 7]]],
      'with room, near takes the run itself (its reach is no cap on what it asks)',
    );
    for (const near of [
      source('near', ZONE, 'all', full), // its pace unknown or stale
      source('near', ZONE, 'all', { ...full, reach: 0 }),
      source('near', ZONE, 'all', { ...full, reach: 4, busyUntil: 20_000 }),
    ])
      assert.deepEqual(asks(near), [['far', [4, 5, 6, 7]]], JSON.stringify(near));
  });

  it('asks a chunk at most twice, and only of a holder that has it', () => {
    const s = state();
    s.assigned[4] = 2; // asked of another already
    const partial = source('partial', ZONE, [6], { inFlight: 0 });
    const p = plan([source('slow', ZONE, 'all', { inFlight: PER_SOURCE }), partial], s);
    assert.deepEqual(
      p.requests.map((r) => [r.source.id, r.indexes]),
      [['partial', [6]]],
      'chunk 4 is asked twice already; of the rest, partial has only 6',
    );
  });
});

describe('planChunks: one import per zone', () => {
  // Two members of this node's zone getting the object too (partial holders), and one remote holder.
  const peersInZone = ['m1', 'm2'];
  const sources = () => [
    source('m1', ZONE, []),
    source('m2', ZONE, []),
    source('origin-side', REMOTE, 'all', { rank: 2 }),
  ];
  const mine = Array.from({ length: 16 }, (_, i) => i).filter((i) => isImporter('k', i, 'self', peersInZone));
  const theirs = Array.from({ length: 16 }, (_, i) => i).filter((i) => !mine.includes(i));

  it('divides the chunks between the zone members by rendezvous hashing', () => {
    assert.ok(mine.length > 0 && theirs.length > 0, `self imports ${mine.join()}`);
    for (let i = 0; i < 16; i++) {
      const importers = ['self', ...peersInZone].filter((id) =>
        isImporter(
          'k',
          i,
          id,
          ['self', ...peersInZone].filter((o) => o !== id),
        ),
      );
      assert.equal(importers.length, 1, `chunk ${i} has exactly one importer`);
    }
  });

  it('fetches from afar only the chunks it imports, and leaves the others to their importers', () => {
    const p = plan(sources(), {
      importer: { self: 'self', deferred: new Map(), lastChunkAt: 0 },
      random: () => 0,
    });
    assert.deepEqual(
      p.deferred.sort((a, b) => a - b),
      theirs,
      'the others are left',
    );
    for (const r of p.requests) for (const i of r.indexes) assert.ok(mine.includes(i), `asked for ${i}`);
  });

  it('takes a left chunk back after IMPORT_WAIT_MS without progress, and not before', () => {
    const since = new Map(theirs.map((i) => [i, 0]));
    const waiting = plan(sources(), {
      now: IMPORT_WAIT_MS - 1,
      importer: { self: 'self', deferred: since, lastChunkAt: 0 },
    });
    assert.deepEqual(waiting.deferred, [], 'left already: not left again');
    for (const r of waiting.requests)
      for (const i of r.indexes) assert.ok(mine.includes(i), `${i} still left`);
    const stalled = plan(sources(), {
      now: IMPORT_WAIT_MS + 1,
      importer: { self: 'self', deferred: since, lastChunkAt: 0 },
    });
    const asked = stalled.requests.flatMap((r) => r.indexes);
    assert.ok(
      asked.some((i) => theirs.includes(i)),
      `taken back: ${asked.join()}`,
    );
    const progressing = plan(sources(), {
      now: IMPORT_WAIT_MS + 1,
      importer: { self: 'self', deferred: since, lastChunkAt: IMPORT_WAIT_MS },
    });
    for (const r of progressing.requests)
      for (const i of r.indexes) assert.ok(mine.includes(i), `${i} left while chunks keep coming`);
  });

  it('leaves nothing to importers without this node id or a nearer member', () => {
    assert.deepEqual(plan(sources()).deferred, []);
    const p = plan([source('far', REMOTE)], {
      importer: { self: 'self', deferred: new Map(), lastChunkAt: 0 },
    });
    assert.deepEqual(p.deferred, []);
    assert.ok(p.requests.length > 0);
  });
});

describe('planChunks: what holds for any state (fast-check, fixed seed unless FUZZ_SEED)', () => {
  const state = fc
    .record({
      count: fc.integer({ min: 1, max: 40 }),
      known: fc.integer({ min: 0, max: 40 }),
      inFlight: fc.integer({ min: 0, max: MAX_IN_FLIGHT }),
      fromOrigin: fc.boolean(),
      withImporter: fc.boolean(),
      // Every chunk not here is asked of someone: the endgame (otherwise rare in random states).
      endgame: fc.boolean(),
      sources: fc.array(
        fc.record({
          cls: fc.integer({ min: 0, max: 3 }),
          whole: fc.boolean(),
          has: fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }),
          inFlight: fc.integer({ min: 0, max: PER_SOURCE }),
          dead: fc.boolean(),
          busy: fc.boolean(),
          straggling: fc.boolean(),
          reach: fc.option(fc.integer({ min: 0, max: 40 })),
        }),
        { maxLength: 8 },
      ),
      verified: fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }),
      assigned: fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }),
      // Per chunk: the source whose straggling request it is in, if any.
      straggler: fc.array(fc.option(fc.integer({ min: 0, max: 7 })), { minLength: 40, maxLength: 40 }),
      deferredSince: fc.array(fc.option(fc.integer({ min: 0, max: 2 * IMPORT_WAIT_MS })), {
        minLength: 40,
        maxLength: 40,
      }),
      seed: fc.integer(),
    })
    .map((s) => ({ ...s, known: Math.min(s.known, s.count) }));

  it('asks each wanted chunk once, of a live source that has it and is among the nearest, within the limits', () => {
    fc.assert(
      fc.property(state, (s) => {
        const bits = (b: boolean[]) => Uint8Array.from(b.slice(0, s.count), Number);
        const sources: PlanSource[] = s.sources.map((x, rank) => ({
          id: `p${rank}`,
          cls: x.cls,
          rank,
          has: x.whole ? 'all' : bits(x.has),
          inFlight: x.inFlight,
          dead: x.dead,
          busyUntil: x.busy ? 20_000 : 0,
          straggling: x.straggling,
          ...(x.reach !== null ? { reach: x.reach } : {}),
        }));
        const verified = bits(s.verified);
        const assigned = bits(s.assigned);
        if (s.endgame) for (let i = 0; i < s.count; i++) if (!verified[i]) assigned[i] = 1;
        const given = Uint8Array.from(assigned);
        const stragglers = new Map<number, string>();
        s.straggler.slice(0, s.count).forEach((from, i) => {
          if (from !== null && assigned[i] === 1 && !verified[i]) stragglers.set(i, `p${from}`);
        });
        const deferred = new Map<number, number>();
        s.deferredSince.slice(0, s.count).forEach((since, i) => {
          if (since !== null) deferred.set(i, since);
        });
        let r = s.seed;
        const plan = planChunks({
          key: 'k',
          known: s.known,
          verified,
          assigned,
          stragglers,
          sources,
          inFlight: s.inFlight,
          fromOrigin: s.fromOrigin,
          now: 10_000,
          random: () => ((r = (Math.imul(r, 1103515245) + 12345) >>> 0) % 1000) / 1000,
          ...(s.withImporter ? { importer: { self: 'self', deferred, lastChunkAt: 0 } } : {}),
        });
        const live = sources.filter((x) => !x.dead && x.busyUntil <= 10_000 && !x.straggling);
        const holds = (x: PlanSource, i: number) => x.has === 'all' || x.has[i] === 1;
        const asked = new Set<number>();
        let total = s.inFlight;
        const perSource = new Map<string, number>();
        for (const { source, indexes } of plan.requests) {
          assert.ok(live.includes(source), 'only live sources');
          perSource.set(source.id, (perSource.get(source.id) ?? source.inFlight) + 1);
          assert.ok(perSource.get(source.id)! <= PER_SOURCE, 'PER_SOURCE');
          total++;
          assert.ok(indexes.length >= 1 && indexes.length <= BATCH_CHUNKS);
          indexes.forEach((i, n) => {
            assert.equal(i, indexes[0]! + n, 'consecutive');
            assert.ok(!asked.has(i), `chunk ${i} once`);
            asked.add(i);
            assert.ok(holds(source, i), `${source.id} has chunk ${i}`);
            if (assigned[i]) {
              // Asked once already: only a straggler's, and only of another holder.
              const from = stragglers.get(i);
              assert.ok(from !== undefined && from !== source.id, `chunk ${i} overtaken from ${from}`);
              // Not across a hop class when a nearer holder will get to every straggler chunk it has
              // (beyond what this plan may ask of it: PER_SOURCE calls of BATCH_CHUNKS).
              const open = [...stragglers.keys()].filter((j) => assigned[j] === 1).length;
              const nearer = live.find(
                (x) =>
                  x.cls < source.cls &&
                  x.id !== from &&
                  holds(x, i) &&
                  (x.reach ?? 0) >= open + PER_SOURCE * BATCH_CHUNKS,
              );
              assert.ok(!nearer, `chunk ${i} overtaken by ${source.id} though ${nearer?.id} will get to it`);
              return;
            }
            assert.ok(i < s.known && !verified[i], `chunk ${i} wanted`);
            const nearest = Math.min(...live.filter((x) => holds(x, i)).map((x) => x.cls));
            assert.equal(source.cls, nearest, `chunk ${i} from the nearest class that has it`);
          });
        }
        assert.ok(total <= Math.max(MAX_IN_FLIGHT, s.inFlight), 'MAX_IN_FLIGHT');
        // In the endgame, a straggler's chunk a holder with room has and did not take was left to a
        // nearer holder with reach (or room ran out across the download).
        const endgame = [...Array(s.known).keys()].every(
          (i) => verified[i] || assigned[i] || !live.some((x) => holds(x, i)),
        );
        for (const [i, from] of endgame && total < MAX_IN_FLIGHT ? stragglers : []) {
          if (asked.has(i)) continue;
          for (const x of live) {
            if (x.id === from || !holds(x, i) || (perSource.get(x.id) ?? x.inFlight) >= PER_SOURCE) continue;
            const nearer = live.some(
              (o) => o.cls < x.cls && o.id !== from && holds(o, i) && (o.reach ?? 0) > 0,
            );
            assert.ok(
              nearer,
              `${x.id} had room and left chunk ${i} of ${from} to no nearer holder with reach`,
            );
          }
        }
        assert.equal(plan.alive, sources.filter((x) => !x.dead).length);
        for (const i of plan.deferred) {
          assert.ok(s.withImporter && !deferred.has(i), `chunk ${i} newly left`);
          assert.ok(!asked.has(i), `chunk ${i} left, not asked`);
        }
        assert.deepEqual(assigned, given, 'the input is not changed');
      }),
      { seed: fuzzSetting('FUZZ_SEED', 13), numRuns: fuzzSetting('FUZZ_RUNS', 2000, 1) },
    );
  });
});
