import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import type { ControlEvent } from '@edgemesh/contracts';
import { ObjectStore, type ObjectStoreOptions } from '../cache/object-store.ts';
import { noControlPlane } from '../control/control-plane.ts';
import { isKey } from '../keys.ts';
import { FakeClock } from '../time/clock.ts';
import { Purger, type PurgerOptions } from './purger.ts';

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
        store: { holds: () => false, lookup: () => undefined, delete: () => Promise.resolve(false) },
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
});
