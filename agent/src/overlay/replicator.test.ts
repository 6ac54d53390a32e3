import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { eventually } from '../../harness/agent-process.ts';
import { Replicator, type ReplicatorOptions } from './replicator.ts';

describe('Replicator', () => {
  it('runs the next repair pass after one failed (the pass chain heals), and the failure escapes nowhere', async () => {
    let passes = 0;
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const replicator = new Replicator({
        store: {
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
});
