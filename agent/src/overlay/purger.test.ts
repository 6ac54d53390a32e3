import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import type { ControlEvent } from '@edgemesh/contracts';
import { noControlPlane } from '../control/control-plane.ts';
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
        store: { lookup: () => undefined, delete: () => Promise.resolve(false) },
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
});
