import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import type { ControlEvent } from '@edgemesh/contracts';
import { holdManifestWrite } from '../../harness/hold-manifest-write.ts';
import type { NodeSignature } from '../cache/manifest.ts';
import { ObjectStore, type ObjectStoreOptions } from '../cache/object-store.ts';
import { DEFAULT_TOMBSTONE_TTL_MS, Tombstones } from '../cache/tombstones.ts';
import { noControlPlane } from '../control/control-plane.ts';
import { isKey } from '../keys.ts';
import { FakeClock, MAX_CLOCK_SKEW_MS } from '../time/clock.ts';
import { APPLIED_KEPT, FuturePurgeError, Purger, type PurgerOptions, UnsignedPurgeError } from './purger.ts';

/**
 * A purger over a store that holds nothing, whose tombstones land in `recorded`; `deliver` hands it
 * a purge from the control plane, `refused` the reasons it gave for not applying one.
 */
function fakePurger(opts: Partial<PurgerOptions> = {}) {
  const recorded = new Map<string, number>();
  const signatures = new Map<string, NodeSignature | undefined>();
  const refused: string[] = [];
  let handler: (event: ControlEvent) => void = () => undefined;
  const clock = new FakeClock();
  const purger = new Purger({
    store: { holds: () => false, purge: () => Promise.resolve(false) },
    tombstones: {
      keeps: () => true,
      record: (key: string, at: number, signature?: NodeSignature) => {
        recorded.set(key, at);
        signatures.set(key, signature);
        return Promise.resolve();
      },
      purgedAt: (key: string) => recorded.get(key),
    },
    control: { ...noControlPlane, onEvent: (h: (event: ControlEvent) => void) => (handler = h) },
    mesh: 'm',
    nodeId: 'a',
    clock,
    logger: pino({ level: 'silent' }),
    owners: () => [],
    forget: () => undefined,
    timeoutMs: 1000,
    onRefused: (reason: string) => refused.push(reason),
    ...opts,
  } as unknown as PurgerOptions);
  const deliver = async (key: string, purgedAtMs: number, signature?: NodeSignature) => {
    handler({
      v: 1,
      type: 'object.purge',
      mesh: 'm',
      from: 'b',
      sentAtMs: purgedAtMs,
      body: { key, purgedAtMs, ...(signature ? { signature } : {}) },
    });
    await new Promise((r) => setImmediate(r));
  };
  return { purger, clock, recorded, signatures, refused, deliver };
}

/** `good:<key>@<time>` in base64: the only signature the fake signer vouches for. */
const good = (key: string, at: number) => Buffer.from(`good:${key}@${at}`).toString('base64');
/** A signer that vouches for a purge with its `good` signature only, over any certificate. */
const signer = {
  signPurge: (key: string, at: number) => ({ certificate: 'Y2VydA==', value: good(key, at) }),
  verifyPurge: (key: string, at: number, signature: NodeSignature | undefined) => {
    if (signature?.value !== good(key, at)) throw new Error(signature ? 'bad signature' : 'unsigned');
    return 'b';
  },
};

describe('Purger', () => {
  it('survives a purge from the control plane whose tombstone cannot be saved, and says so', async () => {
    let deliver: (event: ControlEvent) => void = () => undefined;
    const warnings: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      new Purger({
        store: { holds: () => false, purge: () => Promise.resolve(false) },
        tombstones: {
          keeps: () => true,
          record: () => Promise.reject(new Error('ENOSPC: no space left on device')),
          purgedAt: () => undefined,
        },
        control: {
          ...noControlPlane,
          onEvent: (handler: (event: ControlEvent) => void) => (deliver = handler),
        },
        mesh: 'm',
        nodeId: 'a',
        clock: new FakeClock(),
        logger,
        owners: () => [],
        forget: () => undefined,
        timeoutMs: 1000,
      } as unknown as PurgerOptions);
      deliver({
        v: 1,
        type: 'object.purge',
        mesh: 'm',
        from: 'b',
        sentAtMs: 0,
        body: { key: 'k', purgedAtMs: 0 },
      });
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(unhandled, [], 'the failure did not escape');
      assert.ok(
        warnings.some((w) => w.includes('purge from the control plane not applied') && w.includes('ENOSPC')),
        'it was logged',
      );
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('purges an object the store holds but has not loaded into its index yet (after a start), and says it was here', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-purger-'));
    const clock = new FakeClock();
    const purged = new Map<string, number>();
    const removed: string[] = [];
    const open = (options: Partial<ObjectStoreOptions> = {}) =>
      ObjectStore.open({
        ...{ dir, maxBytes: 2 ** 26, memoryBytes: 0, maxObjectBytes: 2 ** 20, fsync: false, clock, isKey },
        purgedAt: (key) => purged.get(key),
        onRemoved: (key, reason) => removed.push(`${key}:${reason}`),
        ...options,
      });
    try {
      const writer = await open();
      for (const key of ['victim', ...Array.from({ length: 20 }, (_, i) => `k${i}`)]) {
        await writer.put(key, [randomBytes(100)], { size: 100 });
        clock.advance(1000); // the index loads newest first: 'victim' last
      }
      await writer.close();
      const store = await open({ loadRowsPerTurn: 1 });
      assert.ok(!store.keys().includes('victim'), 'not loaded yet');
      const purger = new Purger({
        store,
        tombstones: {
          keeps: () => true,
          record: (key: string, at: number) => Promise.resolve(void purged.set(key, at)),
          purgedAt: (key: string) => purged.get(key),
        },
        control: noControlPlane,
        mesh: 'm',
        nodeId: 'a',
        clock,
        logger: pino({ level: 'silent' }),
        owners: () => [],
        forget: () => undefined,
        timeoutMs: 1000,
      } as unknown as PurgerOptions);
      assert.equal(await purger.purgeEverywhere('victim'), true, 'it was here (not a 404)');
      assert.deepEqual(removed, ['victim:deleted']);
      await store.loaded();
      assert.ok(!store.keys().includes('victim'));
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
  it('drops a version whose manifest was being written when the purge came: nothing it covers is served after', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-purger-'));
    const clock = new FakeClock();
    const purged = new Map<string, number>();
    const removed: string[] = [];
    const open = () =>
      ObjectStore.open({
        ...{ dir, maxBytes: 2 ** 26, memoryBytes: 0, maxObjectBytes: 2 ** 20, fsync: false, clock, isKey },
        purgedAt: (key) => purged.get(key),
        onRemoved: (key, reason) => removed.push(`${key}:${reason}`),
      });
    try {
      const store = await open();
      await store.put('k', [randomBytes(100)], { size: 100 });
      clock.advance(1000);
      const held = holdManifestWrite(t, 'k');
      const putting = store.put('k', [randomBytes(200)], { size: 200 });
      await held.atWrite; // the new version's manifest waits in the database's queue
      clock.advance(10);
      const { promise: recorded, resolve: forgotten } = Promise.withResolvers<void>();
      const purger = new Purger({
        store,
        tombstones: {
          keeps: () => true,
          record: (key: string, at: number) => Promise.resolve(void purged.set(key, at)),
          purgedAt: (key: string) => purged.get(key),
        },
        control: noControlPlane,
        mesh: 'm',
        nodeId: 'a',
        clock,
        logger: pino({ level: 'silent' }),
        owners: () => [],
        forget: () => forgotten(), // right after the tombstone is recorded
        timeoutMs: 1000,
      } as unknown as PurgerOptions);
      const purging = purger.purgeHere('k', clock.now());
      await recorded; // the tombstone landed before the manifest's write
      held.release();
      await putting; // decided before the purge: written, then purged
      assert.equal(await purging, true, 'it was here');
      assert.equal(store.lookup('k'), undefined, 'the version the purge covers is not served');
      assert.deepEqual(removed, ['k:replaced', 'k:deleted']);
      await store.close();
      const reopened = await open();
      assert.deepEqual(reopened.keys(), [], 'nor after a restart');
      await reopened.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a purge dated further ahead than clocks can disagree, from a client or the control plane', async () => {
    const { purger, clock, recorded, refused, deliver } = fakePurger();
    const tooLate = clock.now() + MAX_CLOCK_SKEW_MS + 1;
    await assert.rejects(purger.purgeHere('k', tooLate), FuturePurgeError);
    await assert.rejects(purger.purgeHere('k', Number.NaN), FuturePurgeError);
    await deliver('k', tooLate);
    assert.deepEqual(refused, ['future-purge']);
    assert.equal(recorded.size, 0, 'no tombstone: the key stays writable');
    // Ahead, but within the skew allowed: applied.
    await purger.purgeHere('k', clock.now() + MAX_CLOCK_SKEW_MS);
    assert.equal(recorded.get('k'), clock.now() + MAX_CLOCK_SKEW_MS);
  });

  it('without a signer (security off), keeps no signature it cannot check with the tombstone', async () => {
    const { purger, clock, recorded, signatures, deliver } = fakePurger();
    const at = clock.now();
    const junk = { certificate: 'A'.repeat(8192), value: 'U0lH' }; // 8 KiB nobody checks
    await deliver('k', at, junk);
    await purger.purgeHere('j', at, junk);
    assert.equal(recorded.get('k'), at, 'applied');
    assert.equal(recorded.get('j'), at, 'applied');
    assert.equal(signatures.get('k'), undefined);
    assert.equal(signatures.get('j'), undefined);
  });

  it('with a signer, applies only a purge a node of the mesh signed, and signs its own', async () => {
    const { purger, clock, recorded, signatures, refused, deliver } = fakePurger({ signer });
    const at = clock.now();
    await assert.rejects(purger.purgeHere('k', at), UnsignedPurgeError);
    await assert.rejects(
      purger.purgeHere('k', at, { certificate: 'Y2VydA==', value: 'Zm9yZ2Vk' }),
      UnsignedPurgeError,
    );
    await assert.rejects(
      purger.purgeHere('k', at, signer.signPurge('other', at)),
      UnsignedPurgeError,
      'a signature of another purge',
    );
    await deliver('k', at);
    assert.deepEqual(refused, ['unsigned-purge']);
    assert.equal(recorded.size, 0);
    // The signer's verdict would be good, but a certificate with stray characters (which a base64
    // decoder skips) is no signature: read as gRPC and the disk read one, it never reaches the signer.
    await deliver('k', at, { certificate: 'Y2Vy dA==', value: good('k', at) });
    assert.deepEqual(refused, ['unsigned-purge', 'unsigned-purge']);
    assert.equal(recorded.size, 0);
    await deliver('k', at, signer.signPurge('k', at));
    assert.equal(recorded.get('k'), at, 'a signed purge from the control plane is applied');
    assert.deepEqual(signatures.get('k'), signer.signPurge('k', at), 'its signature kept with it');
    clock.advance(1000);
    await purger.purgeEverywhere('j');
    assert.equal(recorded.get('j'), clock.now(), 'its own purge carries its signature');
    assert.deepEqual(refused, ['unsigned-purge', 'unsigned-purge']);
  });

  it('answers a purge that comes a second time (control plane, then gRPC) with what the first found', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-purger-'));
    const clock = new FakeClock();
    const purged = new Map<string, number>();
    let failures = 1;
    try {
      const store = await ObjectStore.open({
        ...{ dir, maxBytes: 2 ** 26, memoryBytes: 0, maxObjectBytes: 2 ** 20, fsync: false, clock, isKey },
        purgedAt: (key) => purged.get(key),
      });
      const { purger, deliver } = fakePurger({
        store,
        clock,
        tombstones: {
          keeps: () => true,
          record: (key: string, at: number) =>
            failures-- > 0 ? Promise.reject(new Error('EIO')) : Promise.resolve(void purged.set(key, at)),
          purgedAt: (key: string) => purged.get(key),
        } as unknown as PurgerOptions['tombstones'],
      });
      for (const key of ['a', 'b', 'c', 'd']) await store.put(key, [randomBytes(100)], { size: 100 });
      clock.advance(1000);
      const at = clock.now();
      // Its tombstone not saved: not applied, and not remembered as applied.
      await assert.rejects(purger.purgeHere('a', at), /EIO/);
      assert.ok(store.lookup('a'), 'still here');
      await deliver('a', at); // the same purge on the control plane: applied this time
      assert.equal(store.lookup('a'), undefined);
      assert.equal(await purger.purgeHere('a', at), true, 'the owner had it: not a 404');
      // Both at once.
      const both = await Promise.all([purger.purgeHere('b', at), purger.purgeHere('b', at)]);
      assert.deepEqual(both, [true, true]);
      // Another purge of the key is applied anew: nothing left for it.
      assert.equal(await purger.purgeHere('b', at + 1), false);
      // A purge that found nothing says so, the second time too.
      assert.deepEqual([await purger.purgeHere('z', at), await purger.purgeHere('z', at)], [false, false]);
      assert.ok(store.lookup('c'), 'nothing else went');
      // Two at once whose first fails (a disk error): the second tries once itself.
      failures = 1;
      const racing = await Promise.allSettled([purger.purgeHere('d', at), purger.purgeHere('d', at)]);
      assert.deepEqual(
        racing.map((r) => r.status),
        ['rejected', 'fulfilled'],
      );
      assert.equal((racing[1] as PromiseFulfilledResult<boolean>).value, true);
      assert.equal(store.lookup('d'), undefined);
      // Once its tombstone is gone (expired), a stale copy may come back: the purge heard again is
      // applied again, not answered from memory.
      const later = clock.now() + 60_000; // ahead, within the clock skew allowed
      await store.put('e', [randomBytes(100)], { size: 100 });
      assert.equal(await purger.purgeHere('e', later), true);
      purged.delete('e');
      await store.put('e', [randomBytes(100)], { size: 100 }); // created before `later`
      assert.equal(await purger.purgeHere('e', later), true);
      assert.equal(store.lookup('e'), undefined, 'the stale copy went');
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('remembers the answers of at most APPLIED_KEPT purges: the oldest is applied anew when heard again', async () => {
    const purges: string[] = [];
    const { purger, clock } = fakePurger({
      store: {
        holds: () => false,
        purge: (key: string) => (purges.push(key), Promise.resolve(true)),
      } as unknown as PurgerOptions['store'],
    });
    const at = clock.now();
    for (let i = 0; i <= APPLIED_KEPT; i++) await purger.purgeHere(`k${i}`, at);
    await purger.purgeHere(`k${APPLIED_KEPT}`, at); // remembered
    assert.equal(purges.length, APPLIED_KEPT + 1);
    await purger.purgeHere('k0', at); // pushed out by the last one
    assert.equal(purges.length, APPLIED_KEPT + 2);
  });

  it('remembers only a purge that moves its tombstone forward: old signed purges replayed displace no answer', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-purger-'));
    const clock = new FakeClock();
    try {
      const tombstones = await Tombstones.open(join(dir, 't'), clock);
      const store = await ObjectStore.open({
        ...{ dir: join(dir, 's'), maxBytes: 2 ** 26, memoryBytes: 0, maxObjectBytes: 2 ** 20 },
        ...{ fsync: false, clock, isKey, purgedAt: (key: string) => tombstones.purgedAt(key) },
      });
      const { purger } = fakePurger({ store, clock, tombstones, signer });
      const signed = (key: string, at: number) => purger.purgeHere(key, at, signer.signPurge(key, at));
      const t0 = clock.now();
      await signed('k', t0); // an old purge, captured by someone who can publish
      const old = Array.from({ length: APPLIED_KEPT }, (_, i) => ({ key: `old${i}`, at: t0 - i }));
      for (const { key, at } of old) await signed(key, at);
      clock.advance(60_000);
      await store.put('k', [randomBytes(100)], { size: 100 }); // a version made since
      clock.advance(1000);
      const t1 = clock.now();
      assert.equal(await signed('k', t1), true); // on the control plane first
      await signed('k', t0); // the old one replayed, and old ones of other keys
      for (const { key, at } of old) await signed(key, at);
      // And purges of other keys older than tombstones are kept (none is left of them).
      for (let i = 0; i < APPLIED_KEPT; i++) await signed(`expired${i}`, t1 - DEFAULT_TOMBSTONE_TTL_MS - i);
      assert.equal(await signed('k', t1), true, 'then over gRPC: it had it');
      // A refused purge is never answered from memory, before or after the real one.
      await assert.rejects(purger.purgeHere('k', t1), UnsignedPurgeError);
      const future = clock.now() + MAX_CLOCK_SKEW_MS + 1;
      await assert.rejects(signed('k', future), FuturePurgeError);
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('answers a repeated purge from memory only to the node that signed it, not to a member replaying it', async () => {
    const held = new Set(['k', 'j', 'x', 'old']);
    let purges = 0;
    const { purger, clock } = fakePurger({
      signer, // every good signature here is node b's
      store: {
        holds: () => false,
        purge: (key: string) => (purges++, Promise.resolve(held.delete(key))),
      } as unknown as PurgerOptions['store'],
    });
    const at = clock.now();
    const signature = signer.signPurge('k', at);
    assert.equal(await purger.purgeHere('k', at, signature), true); // heard on the control plane
    // Member c replays it over gRPC: it must not learn that this node held k.
    assert.equal(await purger.purgeHere('k', at, signature, 'c'), false);
    // Its signer's own delivery (the DELETE counting its owners) hears what the first one found.
    assert.equal(await purger.purgeHere('k', at, signature, 'b'), true);
    // Also while the first is still being applied.
    const first = purger.purgeHere('j', at, signer.signPurge('j', at));
    const replayed = purger.purgeHere('j', at, signer.signPurge('j', at), 'c');
    assert.deepEqual(await Promise.all([first, replayed]), [true, false]);
    assert.equal(purges, 2, 'applied once per key');
    // Member c's replay coming first (before the control plane's delivery) is applied, and hears false.
    assert.equal(await purger.purgeHere('x', at, signer.signPurge('x', at), 'c'), false);
    assert.equal(held.has('x'), false, 'applied all the same');
    assert.equal(
      await purger.purgeHere('x', at, signer.signPurge('x', at), 'b'),
      true,
      'the signer hears it',
    );
    // So does a purge older than tombstones are kept, which is never remembered.
    const old = at - DEFAULT_TOMBSTONE_TTL_MS - 1;
    assert.equal(await purger.purgeHere('old', old, signer.signPurge('old', old), 'c'), false);
    assert.equal(held.has('old'), false);
  });

  it('keeps a version created after the purge that arrives late, and drops one created before', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-purger-'));
    const clock = new FakeClock();
    const purged = new Map<string, number>();
    const removed: string[] = [];
    try {
      const store = await ObjectStore.open({
        ...{ dir, maxBytes: 2 ** 26, memoryBytes: 0, maxObjectBytes: 2 ** 20, fsync: false, clock, isKey },
        purgedAt: (key) => purged.get(key),
        onRemoved: (key, reason) => removed.push(`${key}:${reason}`),
      });
      const { purger } = fakePurger({
        store,
        clock,
        tombstones: {
          keeps: () => true,
          record: (key: string, at: number) => Promise.resolve(void purged.set(key, at)),
          purgedAt: (key: string) => purged.get(key),
        } as unknown as PurgerOptions['tombstones'],
      });
      const purgedAtMs = clock.now(); // the purge, on a node whose message is slow to come
      clock.advance(1000);
      const newer = await store.put('k', [randomBytes(100)], { size: 100 });
      assert.ok(newer.createdAtMs > purgedAtMs);
      assert.equal(await purger.purgeHere('k', purgedAtMs), false, 'nothing it covers was here');
      assert.equal(store.lookup('k')?.root, newer.root, 'the newer version stays');
      assert.deepEqual(removed, []);
      assert.equal(await purger.purgeHere('k', clock.now()), true, 'a purge after it takes it');
      assert.equal(store.lookup('k'), undefined);
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
