import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import type { ControlEvent } from '@edgemesh/contracts';
import type { Manifest } from '../cache/manifest.ts';
import { ObjectStore, type ObjectStoreOptions } from '../cache/object-store.ts';
import { StoreDb } from '../cache/store-db.ts';
import { noControlPlane } from '../control/control-plane.ts';
import { isKey } from '../keys.ts';
import { FakeClock } from '../time/clock.ts';
import { Purger, type PurgerOptions } from './purger.ts';

/**
 * Holds the next manifest write of `key` (a commit, in its key's turn: the database's queue busy)
 * until `release()`; `atWrite` resolves once the write is held.
 */
function holdManifestWrite(t: TestContext, key: string) {
  const write = Object.getOwnPropertyDescriptor(StoreDb.prototype, 'writeManifest')!
    .value as StoreDb['writeManifest'];
  const { promise: atWrite, resolve: reached } = Promise.withResolvers<void>();
  const { promise: released, resolve: release } = Promise.withResolvers<void>();
  let armed = true;
  t.mock.method(StoreDb.prototype, 'writeManifest', async function (this: StoreDb, manifest: Manifest) {
    if (armed && manifest.key === key) {
      armed = false;
      reached();
      await released;
    }
    return write.call(this, manifest);
  });
  return { atWrite, release: () => release() };
}

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
        tombstones: { record: () => Promise.reject(new Error('ENOSPC: no space left on device')) },
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
});
