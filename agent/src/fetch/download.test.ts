import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { chunkLength, chunkSizeFor, digestOf, MIN_CHUNK_SIZE, rootDigest } from '../cache/chunking.ts';
import type { Manifest } from '../cache/manifest.ts';
import { ObjectStore, type ObjectStoreOptions } from '../cache/object-store.ts';
import { isKey } from '../keys.ts';
import type { HopClass } from '../domain.ts';
import { Counters } from '../telemetry/counters.ts';
import { createLogger } from '../telemetry/logger.ts';
import { systemClock } from '../time/clock.ts';
import {
  PeerBusyError,
  PeerError,
  NOT_FOUND,
  PeerRefusedError,
  type PeerTransport,
  type ReceiveBuffers,
} from '../transport/peer-transport.ts';
import { stubTransport } from '../transport/stub-transport.ts';
import { Download, type DownloadOptions, ORPHAN_GRACE_MS, PeerFetchError, recentBytes } from './download.ts';
import { TooManyFetchesError } from './fetch-limits.ts';
import { PeerFetcher, type PeerFetcherOptions } from './peer-fetcher.ts';
import { headOf, Swarm } from './swarm.ts';

const MiB = 2 ** 20;
const data = randomBytes(16 * MiB); // 4 chunks of 4 MiB
const chunkSize = chunkSizeFor(data.length);
const chunks = Array.from({ length: 4 }, (_, i) =>
  data.subarray(i * chunkSize, i * chunkSize + chunkLength(data.length, chunkSize, i)),
);
const manifest: Manifest = {
  key: 'movie',
  size: data.length,
  chunkSize,
  chunks: chunks.map((c) => digestOf(c)),
  root: rootDigest(
    data.length,
    chunkSize,
    chunks.map((c) => digestOf(c)),
  ),
  createdAtMs: 1,
};

/** A store in `dir` for a download to write into (64 MiB, no hot tier, no fsync). */
function storeIn(dir: string, options: Partial<ObjectStoreOptions> = {}) {
  return ObjectStore.open({
    dir,
    maxBytes: 64 * MiB,
    memoryBytes: 0,
    maxObjectBytes: 64 * MiB,
    fsync: false,
    clock: systemClock,
    isKey,
    ...options,
  });
}

/**
 * A holder of the whole object that serves chunks (optionally refusing the first `busy` calls as
 * busy, and failing the first `failing` ones, or refusing every one as NOT_FOUND). `failed(n)`
 * resolves a turn after its n-th failure or refusal, once the download has taken it in.
 */
function holder(id: string, opts: { busy?: number; failing?: number; refusing?: boolean } = {}) {
  const served: number[] = [];
  const calls = { count: 0 };
  let busy = opts.busy ?? 0;
  let failing = opts.failing ?? 0;
  let failures = 0;
  const waiting: { n: number; resolve: () => void }[] = [];
  const failure = (error: Error) => {
    failures++;
    for (const w of waiting) if (w.n === failures) setImmediate(() => setImmediate(w.resolve));
    return error;
  };
  const transport = stubTransport(id, `${id}:1`, {
    async *fetchChunks(digests) {
      calls.count++;
      await new Promise((r) => setTimeout(r, 5)); // a holder takes a moment to answer, as a real one does
      if (busy-- > 0) throw new PeerBusyError(id, 'busy');
      if (failing-- > 0) throw failure(new PeerError(id, 'FetchChunks stalled: nothing for 1000 ms'));
      if (opts.refusing)
        throw failure(new PeerRefusedError(id, 5, 'FetchChunks refused: NOT_FOUND: no chunk'));
      for (const d of digests) {
        const index = manifest.chunks.indexOf(d);
        served.push(index);
        yield { data: Buffer.from(chunks[index]!) };
      }
    },
    watch: async function* () {
      await Promise.resolve();
      yield { firstDigest: 0, digests: [], have: [], peers: [], manifest: { ...manifest } };
    },
  });
  const failed = (n: number) =>
    new Promise<void>((resolve) => (failures >= n ? resolve() : waiting.push({ n, resolve })));
  return { transport, served, calls, failed };
}

describe('Download (chunks from several holders)', () => {
  let dir: string;
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-download-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function download(holders: PeerTransport[], classes: Record<string, HopClass> = {}) {
    const store = await storeIn(join(dir, String(n++)));
    const fetcher = new PeerFetcher({
      store,
      peers: () => holders,
      hopClassOf: (p) => classes[p.id] ?? 'zone',
      counters: new Counters(),
      logger: createLogger({ level: 'silent', nodeId: 't' }),
      timeoutMs: 1000,
    });
    await readAll(fetcher.open({ head: headOf(manifest), manifest, holders }));
    for (let i = 0; i < 200 && !store.lookup('movie'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(store.lookup('movie')?.root, manifest.root, 'committed');
  }

  /**
   * A download named `only` as the holder, which `member`, another node getting the object, follows
   * (it watches this node: a swarm member) from the start; the holder is `cls` away.
   */
  async function followed(only: PeerTransport, member: PeerTransport, cls: HopClass = 'remote') {
    const swarm = new Swarm();
    const fetcher = new PeerFetcher({
      store: await storeIn(join(dir, String(n++))),
      peers: () => [only],
      resolve: (h) => (h.nodeId === member.id ? member : undefined),
      swarm,
      hopClassOf: () => cls,
      counters: new Counters(),
      logger: createLogger({ level: 'silent', nodeId: 't' }),
      timeoutMs: 60_000,
    });
    const source = fetcher.open({ head: headOf(manifest), manifest, holders: [only] });
    swarm.join(manifest.key, { nodeId: member.id, grpc: member.address });
    return source;
  }

  /** Reads the whole object from `source`, closes it, and checks the bytes. */
  async function readAll(source: ReturnType<PeerFetcher['open']>) {
    const parts = [];
    for (let i = 0; i < 4; i++) parts.push(await source.read(i));
    source.close();
    assert.deepEqual(Buffer.concat(parts), data, 'the bytes read are the object');
  }

  it('pulls from two holders in parallel', async () => {
    const a = holder('a');
    const b = holder('b');
    await download([a.transport, b.transport]);
    assert.ok(
      a.served.length > 0 && b.served.length > 0,
      `both served: ${a.served.join()} / ${b.served.join()}`,
    );
    assert.equal(a.served.length + b.served.length, 4, 'each chunk once');
  });

  it('takes every chunk from the nearer holder when it has them all', async () => {
    const near = holder('near');
    const far = holder('far');
    await download([far.transport, near.transport], { near: 'zone', far: 'remote' });
    assert.deepEqual(far.served, []);
    assert.equal(near.served.length, 4);
  });

  it('asks a holder that failed again later (a stall on a starved node), and gets the chunks from it', async () => {
    const flaky = holder('flaky', { failing: 2 });
    await download([flaky.transport]);
    assert.equal(flaky.served.length, 4);
  });

  it('gives a holder that refuses (no such chunk there) up at once: asking again would get the same', async () => {
    const evicted = holder('evicted', { refusing: true });
    await assert.rejects(download([evicted.transport]), (e) => {
      // Every holder said it holds it no more: evicted everywhere, a miss (404), not a fault (502).
      assert.ok(e instanceof PeerFetchError && e.gone, String(e));
      return true;
    });
    // The planner may have had two requests out at once; neither is asked again.
    assert.ok(evicted.calls.count <= 2, `${evicted.calls.count} requests`);
  });

  it(
    'ends soon (not after the stall) when every holder of the whole object holds it no more and the swarm members it follows have nothing',
    { timeout: 20_000 },
    async () => {
      // The holder evicted it; another node downloading it too follows this one (its Watch stays
      // open, empty). Waited on, the download held its readers for three call timeouts (here 3 min);
      // it now waits a second for news.
      const evicted = holder('evicted', { refusing: true });
      const follower = stubTransport('follower', 'follower:1', {
        watch: async function* (_key, _from, signal) {
          yield { firstDigest: 0, digests: [], have: [], peers: [] };
          await new Promise((resolve) => signal?.addEventListener('abort', resolve, { once: true }));
        },
      });
      const source = await followed(evicted.transport, follower);
      await assert.rejects(source.read(0), (e) => {
        assert.ok(e instanceof PeerFetchError && e.gone, String(e));
        return true;
      });
      source.close();
    },
  );

  it('waits on a swarm member when the holder failed for this node alone, and gets the chunks from it', async () => {
    // The holder fails every call from here (a path cut for this node alone); another node
    // downloading the object follows this one, and has its chunks only after the holder was given up.
    const cutOff = holder('cut-off', { failing: Infinity });
    const follower = holder('follower');
    const following = stubTransport('follower', 'follower:1', {
      fetchChunks: (...args) => follower.transport.fetchChunks(...args),
      watch: async function* () {
        yield { firstDigest: 0, digests: [], have: [], peers: [] };
        await cutOff.failed(3); // the holder was given up (three failures)
        // Its chunks come later than a download with nothing to feed it waits (the scenario, not a
        // wait for an event): a holder that failed, unlike one that let the object go, keeps the
        // swarm waited on for the stall.
        await new Promise((resolve) => setTimeout(resolve, 2 * ORPHAN_GRACE_MS));
        yield { firstDigest: 0, digests: [], have: [0, 1, 2, 3], peers: [] };
      },
    });
    await readAll(await followed(cutOff.transport, following));
    assert.ok(cutOff.calls.count >= 3, 'the holder was given up first');
    assert.equal(follower.served.length, 4);
  });

  for (const variant of ['answers late', 'has chunks late', 'answers only after the grace'] as const) {
    it(`waits on a swarm member that ${variant}, after the only holder answered it holds the object no more`, async () => {
      // Only after the holder's refusal was taken in does the member's Watch tell what it has: the
      // whole object (its first answer, a round trip late, or later than the grace), or chunks it got
      // from a holder this node was never named (after a first answer of nothing).
      const evicted = holder('evicted', { refusing: true });
      const other = holder('member');
      const member = stubTransport('member', 'member:1', {
        fetchChunks: (...args) => other.transport.fetchChunks(...args),
        watch: async function* () {
          if (variant === 'has chunks late') yield { firstDigest: 0, digests: [], have: [], peers: [] };
          await evicted.failed(1);
          // A Watch slower than the grace: while a member has not answered, it may still have it.
          if (variant === 'answers only after the grace')
            await new Promise((resolve) => setTimeout(resolve, 2 * ORPHAN_GRACE_MS));
          yield variant === 'has chunks late'
            ? { firstDigest: 0, digests: [], have: [0, 1, 2, 3], peers: [] }
            : { firstDigest: 0, digests: [], have: [], peers: [], manifest: { ...manifest } };
        },
      });
      await readAll(await followed(evicted.transport, member, 'zone')); // no priming wait: the holder is asked at once
      assert.equal(other.served.length, 4);
    });
  }

  it('logs a holder that let the object go at debug level, not as a failure, and counts it once', async () => {
    const evicted = holder('evicted', { refusing: true });
    const keeps = holder('keeps');
    const lines: string[] = [];
    const store = await storeIn(join(dir, String(n++)));
    const counters = new Counters();
    const fetcher = new PeerFetcher({
      store,
      peers: () => [evicted.transport, keeps.transport],
      hopClassOf: (p) => (p.id === 'evicted' ? 'zone' : 'region'), // the evicted one asked first
      counters,
      logger: pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) }),
      timeoutMs: 1000,
    });
    const holders = [evicted.transport, keeps.transport];
    const source = fetcher.open({ head: headOf(manifest), manifest, holders });
    for (let i = 0; i < 4; i++) await source.read(i);
    source.close();
    assert.ok(evicted.calls.count > 0, 'the holder that let it go was asked');
    const about = lines
      .map((l) => JSON.parse(l) as { level: number; peer?: string })
      .filter((l) => l.peer === 'evicted');
    assert.ok(about.length > 0 && about.every((l) => l.level === 20), JSON.stringify(about));
    assert.equal(counters.holdersGone, 1, `counted once, though asked ${evicted.calls.count} times`);
  });

  it('gives a holder up after three failed requests', async () => {
    const gone = holder('gone', { failing: 3 });
    await assert.rejects(download([gone.transport]), (e) => {
      assert.ok(e instanceof PeerFetchError && !e.gone && /stalled/.test(e.message), String(e));
      return true;
    });
  });

  it('leaves a busy holder for a moment and gets the chunks anyway', async () => {
    const busy = holder('busy', { busy: 3 });
    await download([busy.transport]);
    assert.equal(busy.served.length, 4);
  });
});

/**
 * What a scripted holder does before sending chunk `index`, the n-th of its call number `call`:
 * wait that many ms, stall (send nothing until the call is ended: a holder that only sends
 * heartbeats, which a real transport allows for up to a minute a chunk), refuse the call as busy,
 * fail it (as a transport ends a stalled call), or wait `reset` ms, send the chunk and fail the call
 * then (its stream reset before it ended).
 */
type Act = number | 'stall' | 'busy' | 'fail' | { reset: number };

describe('Download: stragglers (the endgame)', () => {
  const T = 500; // a peer call's timeout (timeoutMs); 5 s by default
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-stragglers-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** Downloads an object of `count` chunks of 64 KiB from holders acting as scripted, to the end. */
  async function run(
    count: number,
    scripts: Record<string, (index: number, call: number, n: number) => Act>,
    classes: Record<string, HopClass> = {},
  ) {
    const parts = Array.from({ length: count }, () => randomBytes(64 * 1024));
    const digests = parts.map((c) => digestOf(c));
    const size = count * 64 * 1024;
    const m: Manifest = {
      key: 'obj',
      size,
      chunkSize: 64 * 1024,
      chunks: digests,
      root: rootDigest(size, 64 * 1024, digests),
      createdAtMs: 1,
    };
    const log: string[] = [];
    const served: Record<string, number> = {};
    const open = { now: 0, max: 0 };
    const holders = Object.entries(scripts).map(([id, script]) => {
      let calls = 0;
      served[id] = 0;
      return stubTransport(id, `${id}:1`, {
        async *fetchChunks(asked, _lengths, signal) {
          const call = calls++;
          open.max = Math.max(open.max, ++open.now);
          const indexes = asked.map((d) => digests.indexOf(d));
          log.push(`${id}#${call} asked [${indexes.join()}]`);
          let n = 0;
          try {
            for (; n < indexes.length; n++) {
              const act = script(indexes[n]!, call, n);
              if (act === 'busy') throw new PeerBusyError(id, 'busy');
              if (act === 'fail') throw new PeerError(id, 'FetchChunks stalled: nothing for 500 ms');
              const wait = typeof act === 'object' ? act.reset : act;
              await new Promise((resolve, reject) => {
                const timer = wait === 'stall' ? undefined : setTimeout(resolve, wait);
                signal?.addEventListener(
                  'abort',
                  () => {
                    clearTimeout(timer);
                    reject(new PeerError(id, 'FetchChunks cancelled'));
                  },
                  { once: true },
                );
              });
              served[id]!++;
              yield { data: Buffer.from(parts[indexes[n]!]!) };
              if (typeof act === 'object') {
                n++; // it was sent
                throw new PeerError(id, 'FetchChunks: stream reset');
              }
            }
          } finally {
            open.now--;
            if (n < indexes.length) log.push(`${id}#${call} ended owing [${indexes.slice(n).join()}]`);
          }
        },
        watch: async function* () {
          await Promise.resolve();
          yield { firstDigest: 0, digests: [], have: [], peers: [], manifest: { ...m } };
        },
      });
    });
    const store = await storeIn(join(dir, String(Math.random())));
    const outcomes: string[] = [];
    // Failures of a holder are logged as they happen (reported as an outcome only once it is given up).
    const logger = createLogger({ level: 'silent', nodeId: 't' });
    logger.warn = (fields: { peer?: string }, message?: string) => {
      outcomes.push(`${fields.peer}:${message}`);
    };
    const download = new Download(
      { head: headOf(m), manifest: m, holders },
      {
        store,
        counters: new Counters(),
        logger,
        timeoutMs: T,
        hopClassOf: (peer) => classes[peer.id] ?? 'zone',
        onOutcome: (peer, outcome) => outcomes.push(`${peer.id}:${outcome}`),
      },
    );
    await download.stored;
    log.push('stored');
    await download.finished;
    assert.equal(store.lookup('obj')?.root, m.root, 'committed');
    return { log, served, outcomes, maxOpen: open.max };
  }

  const stalls = (): Act => 'stall';
  const fast = (): Act => 0;
  /** A holder that sends one chunk every 0.9 T, one call after the other. */
  const dripping = () => {
    let nextAt = performance.now();
    return (): Act => {
      nextAt = Math.max(nextAt, performance.now()) + 0.9 * T;
      return nextAt - performance.now();
    };
  };
  /** How many chunks `id` was asked for, over all its calls. */
  const askedOf = (log: string[], id: string) =>
    log
      .filter((l) => l.startsWith(`${id}#`) && l.includes('asked'))
      .reduce((sum, l) => sum + l.slice(l.indexOf('[') + 1, -1).split(',').length, 0);
  /** The outcomes of `id` other than good: failures logged, given up. */
  const troubleOf = (outcomes: string[], id: string) =>
    outcomes.filter((o) => o.startsWith(`${id}:`) && o !== `${id}:good`);

  for (const count of [1, 2, 4]) {
    it(
      `takes the chunks of a holder that sends nothing from another (${count} chunk(s)), ending its calls first`,
      { timeout: 20_000 },
      async () => {
        const { log, served, outcomes } = await run(count, { stalling: stalls, fast });
        assert.equal(served.fast, count, 'every chunk from the holder that sends');
        const asked = log.filter((l) => l.startsWith('stalling#') && l.includes('asked')).length;
        const ended = log
          .slice(0, log.indexOf('stored'))
          .filter((l) => l.startsWith('stalling#') && l.includes('ended'));
        assert.ok(asked > 0, 'the stalling holder was asked');
        assert.equal(
          ended.length,
          asked,
          `its calls ended once others brought what it owed: ${log.join('; ')}`,
        );
        assert.ok(
          !outcomes.some((o) => o.startsWith('stalling:')),
          `not a failure of it: ${outcomes.join()}`,
        );
      },
    );
  }

  it(
    "gives up an overtaking holder that stalls on the straggler's chunks, and asks a third",
    { timeout: 20_000 },
    async () => {
      // "squat" serves its own first two calls at once, then stalls (as on the chunks it is asked a
      // second time); "slow" never sends; "third" sends. Asked twice already, a chunk waits on two
      // silent holders unless the overtaker that stalls is given up.
      const { served, log } = await run(24, {
        squat: (_i, call) => (call < 2 ? 0 : 'stall'),
        slow: stalls,
        third: fast,
      });
      assert.equal(served.slow, 0);
      const squatted = log.find((l) => l.startsWith('squat#2 asked'));
      assert.ok(squatted, `squat was asked a straggler's chunks: ${log.join('; ')}`);
      assert.ok(served.third! > 0, 'the third holder brought them');
    },
  );

  it(
    'does not give up an honest overtaker that is slower than the straggler was before it stuck',
    { timeout: 20_000 },
    async () => {
      // "near" sends its first call's chunks at once, then its link sticks; "far" sends a chunk every
      // 0.3 T. Judged against near's early pace, far's takeover looked 30 times too slow at once.
      const { served, outcomes } = await run(
        32,
        { near: (_i, call) => (call === 0 ? 0 : 'stall'), far: () => 0.3 * T },
        { near: 'zone', far: 'remote' },
      );
      assert.ok(served.far! > 0);
      assert.deepEqual(troubleOf(outcomes, 'far'), [], 'far neither failed nor given up');
    },
  );

  it(
    'does not let one brief busy refusal of the fast holder spare a dripping one the pace rule',
    { timeout: 30_000 },
    async () => {
      // As the drip case below, but "fast" refuses its first takeover calls as busy for 50 ms. Were a
      // holder with a setback left out of the pace a first-asked holder is judged by, drip would be
      // no straggler from then on, fast never asked again: drip sent all 16 chunks (14 T).
      let busyFrom: number | undefined;
      const { served, log } = await run(64, {
        drip: dripping(),
        fast: (i, _call, n) => {
          // drip, ranked first, is asked chunks 0-15: fast's call for one of those is a takeover
          if (n === 0 && i < 16 && (busyFrom === undefined || performance.now() - busyFrom < 50)) {
            busyFrom ??= performance.now();
            return 'busy';
          }
          return 0;
        },
      });
      assert.ok(busyFrom !== undefined, 'fast refused a takeover');
      const asked = askedOf(log, 'drip');
      assert.ok(served.drip! < asked / 2, `drip sent ${served.drip} of the ${asked} chunks it was asked for`);
    },
  );

  // "burst" sends its first call's chunks at once, then refuses every call as busy (its upload slots
  // went to others), or stalls (its call is overtaken, which is no failure); "stuck" never sends;
  // "honest" is slower than burst was. Judged against burst's stale pace, honest looked dozens of
  // times too slow: its takeover of stuck's chunks was ended as stalled, again and again.
  for (const [after, count, pace] of [
    ['busy', 32, 0.3],
    ['stall', 64, 0.5],
  ] as const) {
    it(
      `does not judge an overtaker by the pace of a holder that ${after === 'busy' ? 'refuses every call since as busy' : 'stalled and was overtaken'}`,
      { timeout: 30_000 },
      async () => {
        const { served, outcomes } = await run(count, {
          burst: (_i, call) => (call === 0 ? 0 : after),
          stuck: stalls,
          honest: () => pace * T,
        });
        assert.ok(served.honest! > 0);
        assert.deepEqual(troubleOf(outcomes, 'honest'), [], 'honest neither failed nor given up');
      },
    );
  }

  it(
    'does not judge an overtaker by the pace of a holder whose calls fail since, before it is given up',
    { timeout: 20_000 },
    async () => {
      // "burst" sends at once, but fails every call for stuck's chunks (ranked second, stuck is asked
      // chunks 12-23): its two takeovers at T fail at once, and it is asked again only after 1 s of
      // backoff (given up then, at its third failure). "honest" sends a chunk every 0.3 T. Were a
      // failure no setback, burst's pace, stale but still counted until then, would make honest's
      // takeover of stuck's chunks look too slow: ended as stalled after T, a failure of honest.
      const { served, outcomes } = await run(32, {
        burst: (i) => (i >= 12 && i < 24 ? 'fail' : 0),
        stuck: stalls,
        honest: () => 0.3 * T,
      });
      assert.ok(served.honest! > 0);
      assert.deepEqual(troubleOf(outcomes, 'honest'), [], 'honest neither failed nor given up');
    },
  );

  it(
    'gets the chunks when stragglers hold every request slot, with at most 16 calls under way',
    { timeout: 30_000 },
    async () => {
      // Four stalling holders ranked first take all 8 slots (4 x PER_SOURCE): "good" was never asked,
      // and the download waited on the transport to end the stalled calls (up to a minute a chunk).
      const four = await run(32, { s1: stalls, s2: stalls, s3: stalls, s4: stalls, good: fast });
      assert.equal(four.served.good, 32);
      // Twelve: were every straggler's call left out of the count, each wave of stragglers would
      // make room for four more (26 calls at once).
      const scripts: Record<string, () => Act> = { good: () => 0.2 * T };
      for (let k = 0; k < 12; k++) scripts[`s${k}`] = stalls;
      const twelve = await run(64, scripts);
      assert.ok(twelve.served.good! > 0);
      assert.ok(twelve.maxOpen <= 16, `${twelve.maxOpen} calls under way at once`);
    },
  );

  it(
    'judges an overtaker that straggles by the strict rule only without spinning its timer',
    { timeout: 30_000 },
    async () => {
      // "fast" serves its first two calls at once, then refuses every call as busy (a stale fast pace:
      // the strict rule's best, left out of the lenient); "drip" serves its first calls at once, then a
      // chunk every 0.6 T, overtaking "stuck": a straggler by the strict rule, not by the lenient one.
      // The timer set for the lenient judgement, once past, fired every millisecond (591 in 3 s).
      const real = globalThis.setTimeout;
      let spins = 0;
      globalThis.setTimeout = ((fn: () => void, ms?: number) => {
        if (ms === 1) spins++;
        return real(fn, ms);
      }) as typeof setTimeout;
      try {
        await run(32, {
          stuck: stalls,
          fast: (_i, call, n) => (call < 2 ? 0 : n === 0 ? 'busy' : 0),
          drip: (_i, call) => (call < 2 ? 0 : 0.6 * T),
        });
      } finally {
        globalThis.setTimeout = real;
      }
      assert.ok(spins < 50, `${spins} straggler timers of 1 ms`);
    },
  );

  it(
    "leaves a zone straggler's chunks to a fast zone holder rather than copying them across zones again",
    { timeout: 20_000 },
    async () => {
      // "slow" (same zone) is 15 times slower than "fast" (same zone); "far" (another region) is idle
      // and as fast. At the end, far copied 12-14 of slow's chunks across the WAN while fast, a few
      // chunks from free, would have brought them about as soon.
      const { served, log } = await run(
        64,
        { fast: () => 0.02 * T, slow: () => 0.3 * T, far: () => 0.02 * T },
        { fast: 'zone', slow: 'zone', far: 'remote' },
      );
      assert.equal(askedOf(log, 'far'), 0, `far was asked: ${log.join('; ')}`);
      assert.ok(served.slow! < askedOf(log, 'slow'), 'fast took over slow');
    },
  );

  it(
    "takes a zone straggler's chunks from afar rather than wait for a zone holder whose last call failed",
    { timeout: 20_000 },
    async () => {
      // "near" (same zone) sends its first chunk at once, and its second at 0.05 T, and then that call
      // fails (a reset): left alone 250 ms, then idle, its pace from before the failure may be stale.
      // "s1"-"s3" (same zone) never send. At T near takes over two of them; "far" (another region)
      // takes the third's chunks rather than leave them to near (waited for by its old pace, it got
      // to them only once its takeovers were done: far was asked nothing). near's takeovers send their
      // first chunk after 0.1 T, so its setback lasts until all three are judged stragglers (asked a
      // moment apart, on a loaded machine they may be judged in turn).
      const { log } = await run(
        8,
        {
          near: (_i, call, n) => (call === 1 ? { reset: 0.05 * T } : call > 1 && n === 0 ? 0.1 * T : 0),
          s1: stalls,
          s2: stalls,
          s3: stalls,
          far: fast,
        },
        { near: 'zone', s1: 'zone', s2: 'zone', s3: 'zone', far: 'remote' },
      );
      assert.ok(askedOf(log, 'far') > 0, `far was asked nothing: ${log.join('; ')}`);
    },
  );

  it(
    "leaves a zone straggler's chunks to a zone holder that failed once and delivered since",
    { timeout: 20_000 },
    async () => {
      // As above, but near's second call (chunks 2-3) fails after its first chunk: asked chunk 3 again
      // once left alone 250 ms, near sends it at once, and its setback is over before T. "far" then
      // leaves the third holder's chunks to near, which gets to them soon; were a setback never over,
      // far would copy them across the WAN as if near were not there.
      const { log } = await run(
        16,
        {
          near: (_i, call, n) => (call === 1 && n === 0 ? { reset: 0.05 * T } : 0),
          s1: stalls,
          s2: stalls,
          s3: stalls,
          far: fast,
        },
        { near: 'zone', s1: 'zone', s2: 'zone', s3: 'zone', far: 'remote' },
      );
      assert.ok(log.includes('near#2 asked [3]'), `near was asked chunk 3 again: ${log.join('; ')}`);
      assert.equal(askedOf(log, 'far'), 0, `far was asked: ${log.join('; ')}`);
    },
  );

  it(
    "lets a farther holder take a stalled zone holder's chunks when the other zone holder drips",
    { timeout: 30_000 },
    async () => {
      // "drip" (same zone) sends a chunk every 0.9 T: at that pace it gets to none of stuck's chunks
      // within the limit, so "far" (another region) takes them rather than leave them to it (a rule
      // that left them to any nearer holder took 14 T here, against 8 T).
      const { served } = await run(
        32,
        { stuck: stalls, drip: dripping(), far: fast },
        { stuck: 'zone', drip: 'zone', far: 'remote' },
      );
      assert.equal(served.stuck, 0);
      assert.ok(served.far! > 0, `far brought none of stuck's chunks: ${JSON.stringify(served)}`);
    },
  );

  it(
    'overtakes a holder that sends a chunk just before each silence would make it a straggler',
    { timeout: 20_000 },
    async () => {
      // "drip" sends one chunk every 0.9 T, one call after the other; "fast" at once. By silence
      // alone, drip is never a straggler, and would hold the download to its pace: 16 chunks asked,
      // 14 T. By its pace against the other's, it is one after its first chunk.
      const { served, log } = await run(64, { drip: dripping(), fast });
      const asked = askedOf(log, 'drip');
      assert.ok(served.drip! < asked / 2, `drip sent ${served.drip} of the ${asked} chunks it was asked for`);
    },
  );
});

describe('Download: what it refuses, and what it lets go', () => {
  let dir: string;
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-refuses-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  // Two chunks of the smallest size a manifest from a peer may have (parseManifest).
  const size = 2 * MIN_CHUNK_SIZE;
  const parts = Array.from({ length: 2 }, () => randomBytes(MIN_CHUNK_SIZE));
  const digests = parts.map((c) => digestOf(c));
  const m: Manifest = {
    key: 'obj',
    size,
    chunkSize: MIN_CHUNK_SIZE,
    chunks: digests,
    root: rootDigest(size, MIN_CHUNK_SIZE, digests),
    createdAtMs: 1,
  };

  /**
   * A holder of the whole object; `bad` sends other bytes for every chunk. Its Watch names the
   * manifest (`watched`, default m), and that it has every chunk.
   */
  function peer(id: string, opts: { bad?: boolean; watched?: Manifest } = {}) {
    const calls = { count: 0 };
    const transport = stubTransport(id, `${id}:1`, {
      async *fetchChunks(asked) {
        calls.count++;
        await new Promise((r) => setTimeout(r, 5));
        for (const d of asked) {
          const part = parts[digests.indexOf(d)]!;
          yield { data: opts.bad ? randomBytes(part.length) : Buffer.from(part) };
        }
      },
      watch: async function* () {
        await Promise.resolve();
        yield {
          firstDigest: 0,
          digests: [],
          have: [0, 1],
          peers: [],
          manifest: { ...(opts.watched ?? m) },
        };
      },
    });
    return { transport, calls };
  }

  async function start(
    located: { manifest?: Manifest; holders: PeerTransport[]; authority?: PeerTransport },
    opts: Partial<DownloadOptions> = {},
  ) {
    const store = await storeIn(join(dir, String(n++)));
    const outcomes: string[] = [];
    const counters = new Counters();
    const download = new Download(
      { head: headOf(located.manifest ?? m), ...located },
      {
        store,
        counters,
        logger: createLogger({ level: 'silent', nodeId: 't' }),
        timeoutMs: 1000,
        onOutcome: (p, outcome) => outcomes.push(`${p.id}:${outcome}`),
        ...opts,
      },
    );
    return { store, download, outcomes, counters };
  }

  /** Waits for background chunk removals (a released chunk's file goes in the background). */
  const settle = () => new Promise((r) => setTimeout(r, 20));

  it('commits nothing when the manifest root is not the root of its chunks, and lets the chunks go', async () => {
    // Every chunk matches its digest in the list, but the list is not the one the root (what a
    // signature covers) was made over: a genuine root paired with other chunks.
    const other = rootDigest(size, MIN_CHUNK_SIZE, [...digests].reverse());
    const forged = { ...m, root: other };
    const { store, download } = await start({ manifest: forged, holders: [peer('a').transport] });
    await assert.rejects(download.stored, /do not add up to the manifest root/);
    await download.finished;
    await settle();
    assert.equal(store.lookup('obj'), undefined, 'nothing committed');
    assert.equal(store.stats().chunks, 0, 'the chunks fetched are let go');
  });

  it('refuses a chunk that does not hash to its digest, and gets it from another holder', async () => {
    const liar = peer('liar', { bad: true });
    const honest = peer('honest');
    const { store, download, outcomes, counters } = await start({
      manifest: m,
      holders: [liar.transport, honest.transport],
    });
    await download.stored;
    await download.finished;
    assert.ok(liar.calls.count > 0, 'the liar was asked');
    assert.ok(outcomes.includes('liar:bad-chunk'), outcomes.join());
    assert.ok(!outcomes.includes('liar:good'), outcomes.join());
    assert.ok(counters.badChunksByPeer.get('liar')! > 0);
    assert.equal(store.lookup('obj')?.root, m.root);
    const read = await Promise.all(digests.map((d) => store.readChunk(d)));
    assert.deepEqual(Buffer.concat(read), Buffer.concat(parts), 'the bytes stored are the object');
  });

  it('fails, committing nothing, when the only holder sends chunks that do not hash to their digests', async () => {
    const { store, download, outcomes } = await start({
      manifest: m,
      holders: [peer('liar', { bad: true }).transport],
    });
    await assert.rejects(download.stored, PeerFetchError);
    await download.finished;
    await settle();
    assert.ok(outcomes.length > 0 && outcomes.every((o) => o === 'liar:bad-chunk'), outcomes.join());
    assert.equal(store.lookup('obj'), undefined);
    assert.equal(store.stats().chunks, 0);
  });

  it("uses a manifest from an owner's Watch only if a node of the mesh vouches for it", async () => {
    // The owner is getting it from the origin: the manifest comes with its Watch.
    const vouched = await start({ holders: [], authority: peer('owner').transport }, { verify: () => {} });
    await vouched.download.stored;
    assert.equal(vouched.store.lookup('obj')?.root, m.root, 'committed when verified');

    const owner = peer('owner');
    const refused = await start(
      { holders: [], authority: owner.transport },
      {
        verify: () => {
          throw new Error('no node of the mesh signed this manifest');
        },
      },
    );
    await assert.rejects(refused.download.stored, /no node of the mesh signed/);
    await refused.download.finished;
    assert.equal(refused.store.lookup('obj'), undefined, 'nothing committed');
    assert.equal(owner.calls.count, 0, 'nothing fetched by it');
  });

  it('ends as a miss when the owner getting it from its origin finds no one has it, as a fault when its fetch fails', async () => {
    // Its Watch shows the shape, then ends NOT_FOUND (the origin's 404) or UNAVAILABLE (the origin down).
    for (const [code, gone] of [
      [NOT_FOUND, true],
      [14, false],
    ] as const) {
      const owner = stubTransport('owner', 'owner:1', {
        watch: async function* () {
          yield { head: { ...headOf(m) }, firstDigest: 0, digests: [], have: [], peers: [] };
          await Promise.resolve();
          throw code === NOT_FOUND
            ? new PeerRefusedError('owner', NOT_FOUND, 'Watch: no one has obj: the origin answered 404')
            : new PeerError('owner', 'Watch failed: 14 UNAVAILABLE: getting obj failed here: origin down');
        },
      });
      const { download } = await start({ holders: [], authority: owner });
      await assert.rejects(download.stored, (e) => e instanceof PeerFetchError && e.gone === gone);
    }
  });

  it(
    'gives up on an owner that keeps its Watch of an origin fetch open and announces no chunk',
    { timeout: 20_000 },
    async () => {
      // Its first answer names the shape and nothing else; then it stays silent, the stream open.
      // Waited on for ever, the download held its readers (and a download slot) until the agent stopped.
      let announced = 0;
      const silent = stubTransport('silent-owner', 'silent-owner:1', {
        watch: async function* (_key, _from, signal) {
          announced++;
          yield { head: { ...headOf(m) }, firstDigest: 0, digests: [], have: [], peers: [] };
          await new Promise((resolve) => signal?.addEventListener('abort', resolve, { once: true }));
        },
      });
      // 4 MiB chunks at 64 MiB/s: a chunk's time is 62 ms, below three call timeouts (150 ms).
      const { download } = await start(
        { holders: [], authority: silent },
        { timeoutMs: 50, originMinBytesPerSecond: 64 * MiB },
      );
      await assert.rejects(download.stored, /announced no chunk for \d+ ms/);
      assert.equal(announced, 1);
    },
  );

  it(
    'follows an owner whose origin is slow but steady, each chunk within a chunk’s time at the slowest rate',
    { timeout: 20_000 },
    async () => {
      // 4 MiB chunks at 4 MiB/s: a chunk's time is 1 s (above three call timeouts, 60 ms). The owner
      // announces a chunk every 400 ms (room for a loaded machine's late timers), the manifest 1.2 s
      // after the start: longer than that time in all, so only each new chunk announced keeps the
      // download waiting.
      const tick = () => new Promise((resolve) => setTimeout(resolve, 400));
      const steady = stubTransport('steady-owner', 'steady-owner:1', {
        watch: async function* () {
          yield { head: { ...headOf(m) }, firstDigest: 0, digests: [], have: [], peers: [] };
          for (let i = 0; i < m.chunks.length; i++) {
            await tick();
            yield { firstDigest: i, digests: [m.chunks[i]!], have: [i], peers: [] };
          }
          await tick();
          yield { firstDigest: 0, digests: [], have: [], peers: [], manifest: { ...m } };
        },
        async *fetchChunks(asked) {
          await Promise.resolve();
          for (const d of asked) yield { data: Buffer.from(parts[digests.indexOf(d)]!) };
        },
      });
      const { download, store } = await start(
        { holders: [], authority: steady },
        { timeoutMs: 20, originMinBytesPerSecond: 4 * MiB, verify: () => {} },
      );
      await download.stored;
      assert.equal(store.lookup('obj')?.root, m.root);
    },
  );

  it('lets go of the chunks it fetched once done: deleted, the object leaves nothing behind', async () => {
    const { store, download } = await start({ manifest: m, holders: [peer('a').transport] });
    const reader = download.reader();
    await download.stored;
    await download.finished;
    assert.equal(store.stats().chunks, 2);
    await store.delete('obj');
    // A reader still open keeps the chunks (the download's lease pins them for it).
    assert.equal(store.stats().chunks, 2, 'kept for the open reader');
    assert.deepEqual(await reader.read(1), parts[1]);
    reader.close();
    await settle();
    assert.equal(store.stats().chunks, 0, 'released once the last reader closed');
  });
});

/** A fetcher over `store` whose peers are `peers`, silent, with a minute's call timeout. */
function quietFetcher(store: ObjectStore, peers: PeerTransport[], more: Partial<PeerFetcherOptions> = {}) {
  return new PeerFetcher({
    store,
    peers: () => peers,
    counters: new Counters(),
    logger: createLogger({ level: 'silent', nodeId: 't' }),
    timeoutMs: 60_000,
    ...more,
  });
}

describe('PeerFetcher: downloads under way at once', () => {
  it('refuses a read needing a download past maxDownloads (not a copy), joins one under way, and starts again once one ends', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-downloads-'));
    try {
      const store = await storeIn(dir);
      // A holder that serves a chunk only when let go: downloads stay under way until then, whether
      // or not anyone still reads them (a client that hung up leaves its download running).
      const gates: (() => void)[] = [];
      const transport = stubTransport('h', 'h:1', {
        getManifest: (key) => Promise.resolve({ manifest: { ...manifest, key }, holds: true, holders: [] }),
        async *fetchChunks(digests) {
          await new Promise<void>((resolve) => gates.push(resolve));
          for (const d of digests) yield { data: Buffer.from(chunks[manifest.chunks.indexOf(d)]!) };
        },
      });
      const fetcher = quietFetcher(store, [transport], { maxDownloads: 2 });
      const located = (key: string) => {
        const m = { ...manifest, key };
        return { head: headOf(m), manifest: m, holders: [transport] };
      };
      const first = fetcher.open(located('a'));
      first.close(); // the reader leaves; the download goes on, and counts
      fetcher.open(located('b')).close();
      assert.throws(() => fetcher.open(located('c')), TooManyFetchesError);
      // A copy asked for by replication or repair is bounded by its sender, not refused here.
      const copied = fetcher.copy('d', manifest.root, [transport]);
      const joined = fetcher.open(located('a'));
      // Let every chunk call go: 'a' and 'b' finish and free their places.
      const done = Promise.all([joined.read(3), joined.read(0)]);
      while (['a', 'b', 'd'].some((key) => store.lookup(key) === undefined)) {
        gates.splice(0).forEach((go) => go());
        await new Promise((resolve) => setImmediate(resolve));
      }
      await done;
      await copied;
      joined.close();
      fetcher.open(located('c')).close();
      while (store.lookup('c') === undefined) {
        gates.splice(0).forEach((go) => go());
        await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('PeerFetcher.copy', () => {
  it('fetches a version once when a second copy of it, asked for meanwhile, learns of it after the first has stored it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-copies-'));
    try {
      const removed: string[] = [];
      const store = await storeIn(dir, { onRemoved: (key, reason) => removed.push(`${key}:${reason}`) });
      // The second GetManifest is answered only once the first copy has stored the object: the
      // write path's Replicate and repair's for one version, racing after a membership change.
      let asked = 0;
      let answerSecond = () => undefined as void;
      const secondAnswered = new Promise<void>((resolve) => (answerSecond = resolve));
      const { transport: serving, served } = holder('h');
      const transport = stubTransport('h', 'h:1', {
        getManifest: async () => {
          if (++asked === 2) await secondAnswered;
          return { manifest, holds: true, holders: [] };
        },
        fetchChunks: (...args) => serving.fetchChunks(...args),
      });
      const fetcher = quietFetcher(store, [transport]);
      const first = fetcher.copy(manifest.key, manifest.root, [transport]);
      const second = fetcher.copy(manifest.key, manifest.root, [transport]);
      await first;
      answerSecond();
      await second;
      assert.deepEqual(
        served.sort((a, b) => a - b),
        manifest.chunks.map((_, i) => i),
        'each chunk fetched once',
      );
      assert.deepEqual(removed, [], 'the version not stored over itself');
      assert.equal(store.lookup(manifest.key)?.root, manifest.root);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('Download of an object larger than the hot tier', () => {
  // 24 MiB in six chunks of 4 MiB, through a 16 MiB hot tier (which takes chunks of up to 4 MiB).
  const big = randomBytes(24 * MiB);
  const bigChunks = Array.from({ length: 6 }, (_, i) => big.subarray(i * 4 * MiB, (i + 1) * 4 * MiB));
  const digests = bigChunks.map((c) => digestOf(c));
  const movie: Manifest = {
    key: 'movie',
    size: big.length,
    chunkSize: 4 * MiB,
    chunks: digests,
    root: rootDigest(big.length, 4 * MiB, digests),
    createdAtMs: 1,
  };
  assert.equal(chunkSizeFor(big.length), movie.chunkSize);
  const bigHolder = () =>
    stubTransport('a', 'a:1', {
      async *fetchChunks(asked) {
        await new Promise((r) => setTimeout(r, 5));
        for (const d of asked) yield { data: Buffer.from(bigChunks[digests.indexOf(d)]!) };
      },
      watch: async function* () {
        await Promise.resolve();
        yield { firstDigest: 0, digests: [], have: [], peers: [], manifest: { ...movie } };
      },
    });
  const located = () => ({ head: headOf(movie), manifest: movie, holders: [bigHolder()] });
  let dir: string;
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-download-large-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** A store with a 16 MiB hot tier holding a small object just read; its chunks' disk reads counted. */
  async function storeWithHotObject() {
    const store = await ObjectStore.open({
      dir: join(dir, String(n++)),
      maxBytes: 64 * MiB,
      memoryBytes: 16 * MiB,
      maxObjectBytes: 64 * MiB,
      fsync: false,
      clock: systemClock,
      isKey,
    });
    const small = await store.put('small', [randomBytes(64 * 1024)]);
    const diskReads: string[] = [];
    const readChunk = store.readChunk.bind(store);
    store.readChunk = (digest, into) => {
      if (!store.hotChunk(digest)) diskReads.push(digest);
      return readChunk(digest, into);
    };
    assert.ok(store.hotChunk(small.chunks[0]!), 'the small object is hot');
    return { store, small, diskReads };
  }

  function fetcherFor(store: ObjectStore) {
    return new PeerFetcher({
      store,
      peers: () => [],
      counters: new Counters(),
      logger: createLogger({ level: 'silent', nodeId: 't' }),
      timeoutMs: 1000,
    });
  }

  async function committed(store: ObjectStore) {
    for (let i = 0; i < 200 && !store.lookup('movie'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(store.lookup('movie')?.root, movie.root, 'committed');
  }

  it('passes through the hot tier cold: its readers get its chunks, and what local readers use stays', async () => {
    const { store, small } = await storeWithHotObject();
    const source = fetcherFor(store).open(located());
    const parts = [];
    for (let i = 0; i < 6; i++) parts.push(await source.read(i));
    source.close();
    assert.ok(Buffer.concat(parts).equals(big), 'the bytes read are the object');
    await committed(store);
    assert.ok(
      store.hotChunk(small.chunks[0]!),
      'the small object is still hot (24 MiB went through a 16 MiB tier)',
    );
    // Its chunks' writes end in any order, and the tier keeps the last ones ended: three fit.
    const there = digests.filter((d) => store.hotChunk(d));
    assert.ok(
      there.length >= 1 && there.length <= 3,
      `the last stretch of the movie is there, cold (${there.length})`,
    );
  });

  it('has a late reader of the whole object read from disk, verified, into reused buffers; a range reads through the tier', async () => {
    const { store, small, diskReads } = await storeWithHotObject();
    const fetcher = fetcherFor(store);
    const where = located();
    const prompt = fetcher.open(where);
    const late = fetcher.open(where);
    for (let i = 0; i < 6; i++) await prompt.read(i);
    prompt.close();
    await committed(store);
    // The late reader, once the download is over: a pass over all 24 MiB, more than the tier holds.
    const pass = late.pass?.(0, 5);
    assert.ok(pass, 'a download is read in a pass');
    const lateParts = [];
    const memory = new Set<ArrayBufferLike>();
    const before = diskReads.length;
    // What the tier holds of it (cold: looking does not change that), its Buffers by digest.
    const tier = new Map(digests.map((d) => [d, store.hotChunk(d)] as const).filter(([, b]) => b));
    let fromTier = 0;
    for (let i = 0; i < 6; i++) {
      const reads = diskReads.length;
      const chunk = await pass.read(i);
      if (chunk === tier.get(digests[i]!)) fromTier++;
      lateParts.push(Buffer.from(chunk));
      if (diskReads.length > reads) memory.add(chunk.buffer);
      pass.done(chunk);
    }
    assert.ok(Buffer.concat(lateParts).equals(big), 'the bytes read late are the object');
    const fromDisk = diskReads.length - before;
    assert.ok(tier.size >= 1, 'the last stretch of the download is in the tier');
    assert.equal(fromTier, tier.size, 'the chunks in the tier were served from it');
    assert.equal(fromDisk, 6 - tier.size, 'the others came from disk');
    assert.ok(
      memory.size <= 2,
      `into two buffers, taken again once sent (${memory.size} for ${fromDisk} reads)`,
    );
    // (Asserted as booleans: a failing comparison of a 4 MiB Buffer would diff it for minutes.)
    assert.ok(
      diskReads.slice(before).every((d) => store.hotChunk(d) === undefined),
      'the chunks read from disk stayed out of the tier',
    );
    assert.ok(store.hotChunk(small.chunks[0]!), 'which kept the small object');
    // A range within one chunk (a video player's) reads through the tier: the next range is a hit.
    const range = late.pass?.(1, 1);
    assert.ok((await range?.read(1))?.equals(bigChunks[1]!), 'the range read');
    const reads = diskReads.length;
    assert.ok((await late.pass?.(1, 1).read(1))?.equals(bigChunks[1]!), 'the range read again');
    assert.equal(diskReads.length, reads, 'the second range of that chunk was a hit');
    late.close();
  });
});

describe('Download into reused receive buffers', () => {
  it('reuses them, and never under a reader sending one, a reader keeping one or a peer given one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-download-'));
    const count = 12;
    const size = count * MIN_CHUNK_SIZE;
    const body = randomBytes(size);
    const parts = Array.from({ length: count }, (_, i) =>
      body.subarray(i * MIN_CHUNK_SIZE, (i + 1) * MIN_CHUNK_SIZE),
    );
    const digests = parts.map((p) => digestOf(p));
    const m: Manifest = {
      key: 'big',
      size,
      chunkSize: MIN_CHUNK_SIZE,
      chunks: digests,
      root: rootDigest(size, MIN_CHUNK_SIZE, digests),
      createdAtMs: 1,
    };
    // The peer's bytes land in the download's buffers; with none free, it waits for one (as a
    // socket waits for the reader), so every chunk arrives in one.
    const memories = new Set<ArrayBufferLike>();
    let pooled = 0;
    let lent: ReceiveBuffers | undefined;
    const transport = stubTransport('a', 'a:1', {
      async *fetchChunks(asked, _lengths, _signal, buffers) {
        lent = buffers;
        for (const d of asked) {
          const part = parts[digests.indexOf(d)]!;
          let data = buffers?.take(part.length);
          for (let waited = 0; !data && waited < 2000; waited++) {
            await new Promise((r) => setTimeout(r, 1));
            data = buffers?.take(part.length);
          }
          if (data) {
            pooled++;
            memories.add(data.buffer);
          }
          data ??= Buffer.allocUnsafe(part.length);
          part.copy(data);
          yield { data };
        }
      },
    });
    const swarm = new Swarm();
    const store = await ObjectStore.open({
      ...{ dir, maxBytes: 256 * MiB, memoryBytes: 0, maxObjectBytes: 256 * MiB },
      ...{ fsync: false, clock: systemClock, isKey },
    });
    try {
      const download = new Download(
        { head: headOf(m), manifest: m, holders: [transport] },
        {
          ...{ store, swarm, counters: new Counters(), timeoutMs: 5000, receiveBuffers: 3 },
          logger: createLogger({ level: 'silent', nodeId: 't' }),
        },
      );
      // A reader that cannot say when it is done (ChunkSource.read) gets the first two chunks, and
      // a peer the next two from memory as they come: both keep what they get.
      const kept: [number, Buffer][] = [];
      swarm.get('big')!.subscribe((event) => {
        if (event.kind !== 'have' || event.index < 2 || event.index > 3) return;
        const early = swarm.chunk(digests[event.index]!);
        if (early) kept.push([event.index, early]);
      });
      const plain = download.reader();
      const keeping = (async () => {
        for (let i = 0; i < 2; i++) kept.push([i, await plain.read(i)]);
      })();
      // A reader sending every chunk (a GET): each held until the next has come, its bytes checked
      // just before it says it is done.
      const reader = download.reader();
      const pass = reader.pass!(0, count - 1);
      const sending = (async () => {
        let previous: [number, Buffer] | undefined;
        for (let i = 0; i < count; i++) {
          const got = await pass.read(i);
          if (previous) {
            assert.ok(previous[1].equals(parts[previous[0]]!), `chunk ${previous[0]} changed while sent`);
            pass.done(previous[1]);
          }
          previous = [i, got];
        }
        assert.ok(previous![1].equals(parts[count - 1]!));
        pass.done(previous![1]);
      })();
      await Promise.all([keeping, sending, download.stored]);
      plain.close();
      reader.close();
      // Over, it keeps no buffers for chunks to come: those free and those let go since are gone.
      assert.ok(lent?.take(MIN_CHUNK_SIZE) === undefined, 'a buffer lent after the download ended');
      assert.deepEqual(
        kept.map(([i]) => i).sort(),
        [0, 1, 2, 3],
        'the reader and the peer got theirs from memory',
      );
      for (const [i, bytes] of kept) assert.ok(bytes.equals(parts[i]!), `kept chunk ${i} was overwritten`);
      assert.equal(pooled, count, 'every chunk arrived in a receive buffer');
      assert.ok(memories.size < count, `reused: ${memories.size} buffers for ${count} chunks`);
      const stored = await Promise.all(digests.map((d) => store.readChunk(d)));
      assert.ok(Buffer.concat(stored).equals(body), 'the bytes stored are the object');
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keeps written chunks for readers behind it, the oldest of any download going first past 64 MiB, and none once its readers close', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-download-'));
    const store = await ObjectStore.open({
      ...{ dir, maxBytes: 256 * MiB, memoryBytes: 0, maxObjectBytes: 256 * MiB },
      ...{ fsync: false, clock: systemClock, isKey },
    });
    const fromDisk = t.mock.method(store, 'readChunk');
    /** A download of 12 chunks of 4 MiB (48 MiB) whose holder sends them into its buffers. */
    const start = (key: string) => {
      const parts = Array.from({ length: 12 }, () => randomBytes(MIN_CHUNK_SIZE));
      const digests = parts.map((p) => digestOf(p));
      const size = parts.length * MIN_CHUNK_SIZE;
      const m: Manifest = {
        ...{ key, size, chunkSize: MIN_CHUNK_SIZE, chunks: digests, createdAtMs: 1 },
        root: rootDigest(size, MIN_CHUNK_SIZE, digests),
      };
      const transport = stubTransport(key, `${key}:1`, {
        async *fetchChunks(asked, _lengths, _signal, buffers) {
          for (const d of asked) {
            const part = parts[digests.indexOf(d)]!;
            const data = buffers?.take(part.length) ?? Buffer.allocUnsafe(part.length);
            part.copy(data);
            await Promise.resolve();
            yield { data };
          }
        },
      });
      const download = new Download(
        { head: headOf(m), manifest: m, holders: [transport] },
        {
          ...{ store, counters: new Counters(), timeoutMs: 5000 },
          logger: createLogger({ level: 'silent', nodeId: 't' }),
        },
      );
      return { download, parts, reader: download.reader() };
    };
    /** Reads chunk `i` as a GET does, and whether it came from disk. */
    const readOne = async (reader: ReturnType<Download['reader']>, parts: Buffer[], i: number) => {
      const before = fromDisk.mock.callCount();
      const pass = reader.pass!(i, i);
      const data = await pass.read(i);
      assert.ok(data.equals(parts[i]!), `chunk ${i}`);
      pass.done(data);
      return fromDisk.mock.callCount() > before;
    };
    try {
      assert.equal(recentBytes(), 0, 'no other download keeps chunks for readers (the budget is the node’s)');
      const a = start('a');
      await a.download.stored; // every chunk written, the reader not started: all of it behind
      for (const i of [0, 5, 11])
        assert.equal(await readOne(a.reader, a.parts, i), false, `a ${i} from memory`);
      assert.equal(recentBytes(), 48 * MiB);
      const b = start('b');
      await b.download.stored; // 96 MiB written for readers: a's oldest 32 MiB go, b's are all kept
      assert.equal(recentBytes(), 64 * MiB);
      const inMemory = async (x: typeof a) => {
        let n = 0;
        for (let i = 0; i < x.parts.length; i++) if (!(await readOne(x.reader, x.parts, i))) n++;
        return n;
      };
      assert.equal(await inMemory(a), 4, 'of a, the 4 written last are left');
      assert.equal(await inMemory(b), 12, 'of b, all');
      a.reader.close();
      assert.equal(recentBytes(), 48 * MiB, 'a has no reader left: its chunks go');
      b.reader.close();
      assert.equal(recentBytes(), 0);
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
