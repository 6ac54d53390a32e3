import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { eventually } from '../../harness/agent-process.ts';
import { Replicator, type ReplicatorOptions, STAND_IN_MIN_BYTES } from './replicator.ts';

/** A replicator on node a (logger silent, purges believed), with the options a test names. */
function replicatorOptions(options: Record<string, unknown>): ReplicatorOptions {
  return {
    self: () => ({ nodeId: 'a', grpc: 'a:1' }),
    logger: pino({ level: 'silent' }),
    onPurged: () => Promise.resolve(),
    ...options,
    store: { loaded: () => Promise.resolve(), ...(options.store as object) },
  } as unknown as ReplicatorOptions;
}
const replicatorWith = (options: Record<string, unknown>) => new Replicator(replicatorOptions(options));
/** A replicator on an owner of the one key 'k' (its `manifest`), whose other owners are `peers`. */
const ownerOfK = (manifest: unknown, peers: unknown[]) =>
  replicatorWith({
    store: { keys: () => ['k'], lookup: () => manifest, peek: () => manifest, holds: () => true },
    placementOf: () => ({ self: true, peers }),
    writeCopies: 1,
    timeoutMs: 1000,
  });

describe('Replicator', () => {
  it('runs the next repair pass after one failed (the pass chain heals), and the failure escapes nowhere', async () => {
    let passes = 0;
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const replicator = new Replicator({
        store: {
          loaded: () => Promise.resolve(),
          keys: () => {
            passes++;
            if (passes === 1) throw new Error('EIO: the index could not be read');
            return [];
          },
        },
        logger: pino({ level: 'silent' }),
      } as unknown as ReplicatorOptions);
      replicator.schedule();
      await eventually(() => Promise.resolve(passes === 1 || undefined));
      replicator.schedule();
      await eventually(() => Promise.resolve(passes === 2 || undefined));
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('repairs at most 4 copies at a time to one owner: a slow one does not hold up copies to the others', async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `k${i}`);
    let inFlight = 0;
    let most = 0;
    const held: (() => void)[] = [];
    const slow = {
      id: 'slow',
      address: 'slow:1',
      // Alive, but each copy takes as long as the test says (a large object over a slow link).
      replicate: () => {
        most = Math.max(most, ++inFlight);
        return new Promise((resolve) => held.push(() => (inFlight--, resolve({}))));
      },
    };
    let fastCopies = 0;
    const fast = { id: 'fast', address: 'fast:1', replicate: () => (fastCopies++, Promise.resolve({})) };
    const replicator = replicatorWith({
      store: {
        keys: () => keys,
        lookup: (k: string) => ({ key: k }),
        peek: (k: string) => ({ key: k }),
        holds: () => true,
      },
      placementOf: () => ({ self: true, peers: [slow, fast] }),
      writeCopies: 1,
      timeoutMs: 60_000,
    });
    try {
      const pass = replicator.repair();
      await eventually(() => Promise.resolve(fastCopies === keys.length || undefined));
      assert.equal(most, 4, 'four copies to the slow owner at a time');
      while (held.length > 0 || inFlight > 0) {
        held.splice(0).forEach((done) => done());
        await new Promise((r) => setImmediate(r));
      }
      await pass;
      assert.equal(most, 4);
    } finally {
      replicator.close();
    }
  });

  it('tries a copy that failed again, with backoff, with no membership change, until it is made', async () => {
    let calls = 0;
    const owner = {
      id: 'b',
      address: 'b:1',
      replicate: () => {
        calls++;
        return calls < 3 ? Promise.reject(new Error('ECONNREFUSED')) : Promise.resolve({});
      },
    };
    const manifest = { key: 'k', createdAtMs: 1 };
    const replicator = ownerOfK(manifest, [owner]);
    try {
      replicator.schedule();
      await eventually(() => Promise.resolve(calls === 3 || undefined), 10_000);
      // Made: no pass runs again by itself, and a later one does not copy it twice.
      replicator.schedule();
      await eventually(() => Promise.resolve(replicator.backlog === 0 || undefined));
      await replicator.repair();
      assert.equal(calls, 3);
      // A restarted owner may have lost it: forgotten, it is asked again.
      replicator.forget('b:1');
      await replicator.repair();
      assert.equal(calls, 4);
      // A key removed here (replaced, evicted) is forgotten with it: a new version is copied again.
      replicator.forgetKey('k');
      await replicator.repair();
      assert.equal(calls, 5);
    } finally {
      replicator.close();
    }
  });

  it('asks only as many owners as the PUT waits for, the rest after its answer, and a stand-in when owners fail', async () => {
    const asked: string[] = [];
    let answerB: (() => void) | undefined;
    const peer = (id: string, outcome: 'ok' | 'fail' | 'later') => ({
      id,
      address: `${id}:1`,
      replicate: () => {
        asked.push(id);
        if (outcome === 'later') return new Promise<object>((resolve) => (answerB = () => resolve({})));
        return outcome === 'ok' ? Promise.resolve({}) : Promise.reject(new Error('UNAVAILABLE'));
      },
    });
    const options = (owners: unknown[], standIns: unknown[]) =>
      replicatorOptions({
        store: { keys: () => [], lookup: () => undefined, peek: () => undefined, holds: () => false },
        placementOf: () => ({ self: true, peers: owners }),
        standInsOf: () => standIns,
        writeCopies: 2,
        timeoutMs: 1000,
      });
    const settle = async () => {
      for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
    };
    // W = 2: one copy besides the writer's. Owner b is asked alone (c would share the writer's
    // uplink with it); c gets its copy once b's answered the PUT.
    const replicator = new Replicator(options([peer('b', 'later'), peer('c', 'ok')], []));
    const answer = replicator.afterPut({ key: 'k', createdAtMs: 1 } as never);
    await settle();
    assert.deepEqual(asked, ['b'], 'only the owner the PUT waits for');
    answerB!();
    assert.equal(await answer, 2);
    await eventually(() => Promise.resolve(asked.length === 2 || undefined));
    assert.deepEqual(asked, ['b', 'c']);
    replicator.close();
    // Both owners down: the write still gets its second copy, on the next node in placement order.
    asked.length = 0;
    const down = new Replicator(options([peer('b', 'fail'), peer('c', 'fail')], [peer('d', 'ok')]));
    assert.equal(await down.afterPut({ key: 'k', createdAtMs: 1 } as never), 2);
    assert.deepEqual(asked, ['b', 'c', 'd']);
    down.close();
  });

  it('gives up waiting on an owner that membership stops counting alive, and asks the next', async () => {
    const asked: string[] = [];
    const hung = {
      id: 'b',
      address: 'b:1',
      // A partition: no answer, no error, until the call is cancelled (as the gRPC client's is).
      replicate: (_m: unknown, _s: unknown, signal: AbortSignal) => {
        asked.push('b');
        return new Promise((_, reject) =>
          signal.addEventListener('abort', () => reject(signal.reason as Error)),
        );
      },
    };
    const c = {
      id: 'c',
      address: 'c:1',
      replicate: () => {
        asked.push('c');
        return Promise.resolve({});
      },
    };
    let bAlive = true;
    const replicator = replicatorWith({
      store: { keys: () => [], lookup: () => undefined, peek: () => undefined, holds: () => false },
      placementOf: () => ({ self: true, peers: [hung, c] }),
      isAlive: (p: { id: string }) => p.id !== 'b' || bAlive,
      writeCopies: 2,
      timeoutMs: 60_000,
    });
    try {
      const answer = replicator.afterPut({ key: 'k', createdAtMs: 1 } as never);
      await eventually(() => Promise.resolve(asked.length === 1 || undefined));
      bAlive = false; // suspected: its copy is not waited for any more
      assert.equal(await answer, 2);
      assert.deepEqual(asked, ['b', 'c']);
    } finally {
      replicator.close();
    }
  });

  it('a writer that is not an owner owes the owners their copies until each has one (its own is kept till then)', async () => {
    let cUp = false;
    const made: string[] = [];
    const owner = (id: string, up: () => boolean) => ({
      id,
      address: `${id}:1`,
      replicate: () =>
        up() ? (made.push(id), Promise.resolve({})) : Promise.reject(new Error('UNAVAILABLE')),
    });
    const manifest = { key: 'k', createdAtMs: 1 };
    const replicator = replicatorWith({
      store: { keys: () => ['k'], lookup: () => manifest, peek: () => manifest, holds: () => true },
      placementOf: () => ({ self: false, peers: [owner('b', () => true), owner('c', () => cUp)] }),
      writeCopies: 2,
      timeoutMs: 1000,
    });
    try {
      assert.equal(await replicator.afterPut(manifest as never), 2);
      await eventually(() => Promise.resolve(replicator.backlog === 0 || undefined));
      assert.equal(replicator.owesCopies('k'), true, 'c has no copy yet');
      // A pass while c is still down: b's copy confirmed is not enough, the copy stays owed.
      await replicator.repair();
      assert.equal(replicator.owesCopies('k'), true, 'still owed after a pass: c has no copy yet');
      cUp = true; // the retry (repair, with backoff) makes c's copy
      await eventually(() => Promise.resolve(made.includes('c') || undefined), 10_000, "c's copy made");
      await eventually(() => Promise.resolve(!replicator.owesCopies('k') || undefined), 10_000);
      assert.deepEqual(made, ['b', 'c']);
    } finally {
      replicator.close();
    }
  });

  it('checks a cached copy for a missed purge once, not on every pass, and again once the control plane is back', async () => {
    let checks = 0;
    let copies = 0;
    const owner = {
      id: 'b',
      address: 'b:1',
      getManifest: () => {
        checks++;
        return Promise.resolve(undefined);
      },
      replicate: () => {
        copies++;
        return Promise.resolve({});
      },
    };
    const manifest = { key: 'cached', createdAtMs: 1 };
    const replicator = replicatorWith({
      store: { keys: () => ['cached'], lookup: () => manifest, peek: () => manifest, holds: () => true },
      placementOf: () => ({ self: false, peers: [owner] }),
      writeCopies: 1,
      timeoutMs: 1000,
    });
    try {
      await replicator.repair();
      await replicator.repair();
      assert.equal(checks, 1, 'checked once over two passes');
      replicator.recheckPurges();
      await replicator.repair();
      assert.equal(checks, 2, 'checked again after the control plane came back');
      assert.equal(copies, 0, 'a cached copy is not pushed to owners');
    } finally {
      replicator.close();
    }
  });

  it('answers within one replication timeout however many owners it tries one after another', async () => {
    const hung = (id: string) => ({
      id,
      address: `${id}:1`,
      replicate: () => new Promise(() => undefined), // alive, never answering
    });
    const replicator = replicatorWith({
      store: { keys: () => [], lookup: () => undefined, peek: () => undefined, holds: () => false },
      placementOf: () => ({ self: true, peers: [hung('b'), hung('c')] }),
      standInsOf: () => [hung('d'), hung('e')],
      isAlive: () => true,
      writeCopies: 2,
      timeoutMs: 200,
    });
    try {
      const started = Date.now();
      assert.equal(await replicator.afterPut({ key: 'k', createdAtMs: 1 } as never), 1, 'only its own copy');
      assert.ok(Date.now() - started < 2000, 'one timeout, not one per owner tried');
    } finally {
      replicator.close();
    }
  });

  it('a writer that owns the key owes the other owners their copies too, until each confirmed one', async () => {
    const manifest = { key: 'k', createdAtMs: 1 };
    let cUp = false;
    const replicator = replicatorWith({
      store: { keys: () => ['k'], lookup: () => manifest, peek: () => manifest, holds: () => true },
      placementOf: () => ({
        self: true,
        peers: [
          { id: 'b', address: 'b:1', replicate: () => Promise.resolve({}) },
          {
            id: 'c',
            address: 'c:1',
            replicate: () => (cUp ? Promise.resolve({}) : Promise.reject(new Error('UNAVAILABLE'))),
          },
        ],
      }),
      writeCopies: 1,
      timeoutMs: 1000,
    });
    try {
      assert.equal(await replicator.afterPut(manifest as never), 1);
      await eventually(() => Promise.resolve(replicator.backlog === 0 || undefined));
      assert.equal(replicator.owesCopies('k'), true, 'kept as owed (evicted last) while c has none');
      cUp = true;
      await eventually(() => Promise.resolve(!replicator.owesCopies('k') || undefined), 10_000);
      assert.equal(replicator.keepAsStandIn('x', 10, 'b'), true);
      assert.equal(replicator.owesCopies('x'), true, 'a stand-in copy is owed to the owners');
    } finally {
      replicator.close();
    }
  });

  it("keeps a stand-in while any member that asked for it claims it: a flood gives up its own claims, not others'", async () => {
    const make = () =>
      replicatorWith({
        store: { keys: () => [], lookup: () => undefined, peek: () => undefined, holds: () => false },
        placementOf: () => ({ self: false, peers: [] }),
        writeCopies: 1,
        timeoutMs: 1000,
        standInBytes: 200_000,
      });
    const owed = (r: ReturnType<typeof make>, ...keys: string[]) => keys.filter((k) => r.owesCopies(k));
    const honestKeys = Array.from({ length: 10 }, (_, i) => `h${i}`);
    // The flood asks first for a key an honest member (with a larger share) then asks for too.
    const a = make();
    try {
      for (let i = 0; i < 5; i++) a.keepAsStandIn(`o${i}`, 20_000, 'honest');
      a.keepAsStandIn('h1', 20_000, 'flood');
      a.keepAsStandIn('h1', 20_000, 'honest');
      for (let i = 0; i < 10; i++) a.keepAsStandIn(`f${i}`, 30_000, 'flood');
      assert.deepEqual(owed(a, 'h1'), ['h1'], 'the honest claim keeps it');
    } finally {
      a.close();
    }
    // A member with no share asks for an honest member's keys after it, then floods.
    const b = make();
    try {
      for (const k of honestKeys) b.keepAsStandIn(k, 10_000, 'honest');
      for (const k of honestKeys) b.keepAsStandIn(k, 10_000, 'thief');
      for (let i = 0; i < 10; i++) b.keepAsStandIn(`f${i}`, 30_000, 'thief');
      assert.deepEqual(owed(b, ...honestKeys), honestKeys);
      assert.ok(owed(b, 'f9').length === 1, 'the newest of the flood kept');
    } finally {
      b.close();
    }
    // A key asked for again is counted at its size now: small first, then a large new version.
    const d = make();
    try {
      for (let i = 0; i < 50; i++) d.keepAsStandIn(`k${i}`, 0, 'A');
      for (let i = 0; i < 50; i++) d.keepAsStandIn(`k${i}`, 50_000, 'A');
      const kept = Array.from({ length: 50 }, (_, i) => `k${i}`).filter((k) => d.owesCopies(k));
      assert.equal(kept.length, 4, 'four of 50 kB fit in 200 kB');
    } finally {
      d.close();
    }
    // Another, larger version of one of an honest member's keys: its claims go with the old version,
    // so its share does not swell and its other keys stay.
    const v = make();
    try {
      for (const k of honestKeys) v.keepAsStandIn(k, 10_000, 'honest');
      v.keepAsStandIn('h0', 150_000, 'attacker'); // h0 replaced by a version of 150 kB
      assert.deepEqual(owed(v, ...honestKeys.slice(1)), honestKeys.slice(1));
      // 90 kB of the honest member's and 150 kB of the attacker's: the attacker's share gives way.
      assert.deepEqual(owed(v, 'h0'), [], 'counted to the one that asked for the new version');
    } finally {
      v.close();
    }
    // A stand-in written here afterwards is owed as a write, outside the stand-ins' share.
    const e = make();
    try {
      e.keepAsStandIn('k', 10_000, 'A');
      await e.afterPut({ key: 'k', createdAtMs: 1 } as never);
      for (let i = 0; i < 10; i++) e.keepAsStandIn(`f${i}`, 30_000, 'A');
      assert.deepEqual(owed(e, 'k'), ['k']);
    } finally {
      e.close();
    }
  });

  it('keeps stand-ins as owed within standInBytes, the oldest of the member that asked for the most leaving first', () => {
    // A member asking for copies of keys whose owners (itself) then refuse them cannot pin the store,
    // nor push out the stand-ins other members asked for.
    const replicator = replicatorWith({
      store: { keys: () => [], lookup: () => undefined, peek: () => undefined, holds: () => false },
      placementOf: () => ({ self: false, peers: [] }),
      writeCopies: 1,
      timeoutMs: 1000,
      standInBytes: 100_000,
    });
    const owed = (...keys: string[]) => keys.filter((k) => replicator.owesCopies(k));
    try {
      assert.equal(replicator.keepAsStandIn('h1', 20_000, 'honest'), true);
      assert.equal(replicator.keepAsStandIn('f1', 40_000, 'flood'), true);
      assert.equal(
        replicator.keepAsStandIn('f1', 40_000, 'flood'),
        true,
        'the same key again: no more bytes',
      );
      assert.equal(replicator.keepAsStandIn('f2', 40_000, 'flood'), true);
      assert.equal(replicator.keepAsStandIn('big', 101_000, 'honest'), false, 'larger than the share');
      assert.deepEqual(owed('h1', 'f1', 'f2', 'big'), ['h1', 'f1', 'f2']);
      // Past the share: the flood's own oldest leave, whoever asks.
      assert.equal(replicator.keepAsStandIn('f3', 40_000, 'flood'), true);
      assert.deepEqual(owed('h1', 'f1', 'f2', 'f3'), ['h1', 'f2', 'f3'], 'f1 kept as a cached copy');
      assert.equal(replicator.keepAsStandIn('h2', 30_000, 'honest'), true);
      assert.deepEqual(owed('h1', 'h2', 'f2', 'f3'), ['h1', 'h2', 'f3']);
      for (let i = 4; i < 20; i++) replicator.keepAsStandIn(`f${i}`, 40_000, 'flood');
      assert.deepEqual(owed('h1', 'h2'), ['h1', 'h2'], 'a flood pushes out its own only');
      replicator.forgetKey('f19');
      assert.equal(replicator.keepAsStandIn('h3', 60_000, 'honest'), true);
      assert.deepEqual(owed('h1', 'h2', 'h3'), ['h2', 'h3'], 'the asker holds the most: its own oldest left');
      assert.equal(
        replicator.keepAsStandIn('g', 95_000, 'flood'),
        false,
        'it would hold the most: a cached copy',
      );
      assert.deepEqual(owed('h2', 'h3', 'g'), ['h2', 'h3']);
      replicator.forgetKey('h3');
      assert.equal(replicator.keepAsStandIn('g2', 70_000, 'flood'), true, 'room again once one is gone');
      assert.deepEqual(owed('h2', 'g2'), ['h2', 'g2']);
      // Empty objects count STAND_IN_MIN_BYTES each (their index rows): they cannot pin rows past it.
      for (let i = 0; i < 1000; i++) replicator.keepAsStandIn(`empty/${i}`, 0, 'flood');
      const empties = Array.from({ length: 1000 }, (_, i) => `empty/${i}`);
      assert.equal(owed(...empties).length, Math.floor((100_000 - 30_000) / STAND_IN_MIN_BYTES));
      assert.deepEqual(owed('h2'), ['h2']);
    } finally {
      replicator.close();
    }
  });

  // Without the cancel the pass would wait the replication timeout (ten minutes here): the test's own
  // timeout makes that a failure.
  it(
    'cancels a copy to a member no longer counted alive: the pass ends then, not after the replication timeout',
    { timeout: 60_000 },
    async () => {
      let alive = true;
      let reason: unknown;
      const manifest = { key: 'k', createdAtMs: 1 };
      const cutOff = {
        id: 'b',
        address: 'b:1',
        // A partition: no answer, ever; only its cancel ends the call.
        replicate: (_m: unknown, _s: unknown, signal: AbortSignal) =>
          new Promise((_r, reject) =>
            signal.addEventListener('abort', () => reject((reason = signal.reason as Error)), { once: true }),
          ),
      };
      const replicator = replicatorWith({
        store: { keys: () => ['k'], lookup: () => manifest, peek: () => manifest, holds: () => true },
        placementOf: () => ({ self: true, peers: [cutOff] }),
        isAlive: () => alive,
        writeCopies: 1,
        timeoutMs: 600_000,
      });
      try {
        let done = false;
        const pass = replicator.repair().then(() => (done = true));
        await new Promise((r) => setImmediate(r));
        assert.equal(done, false, 'waiting for b');
        alive = false; // membership declared it suspect
        await pass;
        assert.match((reason as Error).message, /no longer counted alive/);
      } finally {
        replicator.close();
      }
    },
  );

  it('runs a pass that is due though more keep being asked for (a steady stream of failed copies)', async () => {
    let passes = 0;
    const replicator = replicatorWith({
      store: { keys: () => (passes++, []) },
      placementOf: () => ({ self: true, peers: [] }),
      writeCopies: 1,
      timeoutMs: 1000,
    });
    try {
      // Each failed background copy asks for a pass in 0.5 s; they come faster than that.
      for (let i = 0; i < 200 && passes === 0; i++) {
        replicator.schedule(100);
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(passes > 0, 'the first pass asked for ran');
    } finally {
      replicator.close();
    }
  });

  it('forgets its backoff when membership changes: the copies a pass leaves after a heal are retried at once', async () => {
    let failing = true;
    let made = 0;
    let refused = 0;
    const manifest = { key: 'k', createdAtMs: 1 };
    const owner = {
      id: 'b',
      address: 'b:1',
      replicate: () =>
        failing ? (refused++, Promise.reject(new Error('UNAVAILABLE'))) : (made++, Promise.resolve({})),
    };
    const replicator = ownerOfK(manifest, [owner]);
    try {
      // A long fault: passes failed, and the next retry is 16 s away.
      for (let i = 0; i < 6; i++) await replicator.repair();
      // The member comes back; the first pass after it still fails once (its copy was refused).
      assert.equal(refused, 6);
      replicator.membershipChanged();
      await eventually(() => Promise.resolve(refused === 7 || undefined), 5000, 'a pass');
      failing = false;
      // The retry after it is 0.5 s away, not 30 s.
      await eventually(() => Promise.resolve(made > 0 || undefined), 5000, 'the copy made');
    } finally {
      replicator.close();
    }
  });

  it('makes the copies nobody waits for from the first owner that confirmed one, not from the writer again', async () => {
    const manifest = { key: 'k', createdAtMs: 1 };
    const sources: Record<string, string> = {};
    const owner = (id: string) => ({
      id,
      address: `${id}:1`,
      replicate: (_m: unknown, source: { nodeId: string }) => {
        sources[id] = source.nodeId;
        return Promise.resolve({});
      },
    });
    const replicator = replicatorWith({
      store: { keys: () => ['k'], lookup: () => manifest, peek: () => manifest, holds: () => true },
      placementOf: () => ({ self: false, peers: [owner('b'), owner('c'), owner('d')] }),
      writeCopies: 2,
      timeoutMs: 1000,
    });
    try {
      assert.equal(await replicator.afterPut(manifest as never), 2);
      await eventually(() => Promise.resolve(Object.keys(sources).length === 3 || undefined));
      assert.deepEqual(sources, { b: 'a', c: 'b', d: 'b' }, 'the writer (a) sent it once');
    } finally {
      replicator.close();
    }
  });

  it('queues one pass behind a long one, however many are asked for while it runs', async () => {
    let passes = 0;
    let release: () => void = () => undefined;
    const manifest = { key: 'k', createdAtMs: 1 };
    const slow = {
      id: 'b',
      address: 'b:1',
      replicate: () => new Promise((r) => (release = () => r({}))),
    };
    const replicator = replicatorWith({
      store: {
        keys: () => (passes++, ['k']),
        lookup: () => manifest,
        peek: () => manifest,
        holds: () => true,
      },
      placementOf: () => ({ self: true, peers: [slow] }),
      writeCopies: 1,
      timeoutMs: 60_000,
    });
    try {
      replicator.schedule(1);
      await eventually(() => Promise.resolve(passes === 1 || undefined));
      for (let i = 0; i < 5; i++) {
        replicator.schedule(1);
        await new Promise((r) => setTimeout(r, 20)); // each timer fires while the pass runs
      }
      release();
      await eventually(() => Promise.resolve(passes === 2 || undefined));
      await eventually(() => Promise.resolve(replicator.backlog === 0 || undefined));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(passes, 2, 'the long pass, then one more');
    } finally {
      replicator.close();
    }
  });

  it('drops its copy when an owner answers that the key was purged (not counted, nor spread), with the purge it showed', async () => {
    const manifest = { key: 'k', createdAtMs: 1 };
    const signature = { certificate: 'Y2VydA==', value: 'c2ln', by: 'token:ops' };
    const purged: unknown[] = [];
    const owner = {
      id: 'b',
      address: 'b:1',
      replicate: () => Promise.resolve({ purgedAtMs: 5, purgeSignature: signature }),
    };
    const replicator = replicatorWith({
      store: { keys: () => ['k'], lookup: () => manifest, peek: () => manifest, holds: () => true },
      placementOf: () => ({ self: true, peers: [owner] }),
      onPurged: (...args: unknown[]) => (purged.push(args), Promise.resolve()),
      writeCopies: 2,
      timeoutMs: 1000,
    });
    try {
      // A PUT's copy: the owner's answer is no copy, and the purge is applied here.
      assert.equal(await replicator.afterPut(manifest as never), 1, 'not counted as a copy');
      assert.deepEqual(purged, [['k', 5, signature]]);
      // The same from a repair pass (this node was away when the key was purged).
      await replicator.repair();
      assert.deepEqual(purged, [
        ['k', 5, signature],
        ['k', 5, signature],
      ]);
    } finally {
      replicator.close();
    }
  });

  it('applies a purge an owner reports for a cached copy made at or before it, not for one made after', async () => {
    const signature = { certificate: 'Y2VydA==', value: 'c2ln' };
    const purged: unknown[] = [];
    const owner = {
      id: 'b',
      address: 'b:1',
      getManifest: () => Promise.resolve({ purgedAtMs: 5, purgeSignature: signature }),
    };
    const cached = (createdAtMs: number) =>
      replicatorWith({
        store: {
          keys: () => ['old'],
          lookup: () => ({ key: 'old', createdAtMs }),
          peek: () => ({ key: 'old', createdAtMs }),
          holds: () => true,
        },
        placementOf: () => ({ self: false, peers: [owner] }),
        onPurged: (...args: unknown[]) => (purged.push(args), Promise.resolve()),
        writeCopies: 1,
        timeoutMs: 1000,
      });
    for (const createdAtMs of [5, 6]) {
      const replicator = cached(createdAtMs);
      try {
        await replicator.repair();
      } finally {
        replicator.close();
      }
    }
    assert.deepEqual(purged, [['old', 5, signature]], 'the copy made at the purge, not the one after');
  });

  it('stops its alive check once no copy is under way', async () => {
    const manifest = { key: 'k', createdAtMs: 1 };
    let checks = 0;
    const owner = {
      id: 'b',
      address: 'b:1',
      // A copy that takes a while: the alive check (every 200 ms) runs meanwhile.
      replicate: () => new Promise((r) => setTimeout(() => r({}), 500)),
    };
    const replicator = replicatorWith({
      store: { keys: () => ['k'], lookup: () => manifest, peek: () => manifest, holds: () => true },
      placementOf: () => ({ self: true, peers: [owner] }),
      isAlive: () => (checks++, true),
      writeCopies: 1,
      timeoutMs: 60_000,
    });
    try {
      await replicator.repair();
      assert.ok(checks > 0, 'checked while the copy was under way');
      const after = checks;
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(checks, after, 'no check with nothing under way');
    } finally {
      replicator.close();
    }
  });
});
