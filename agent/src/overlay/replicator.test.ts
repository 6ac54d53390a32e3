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
    const replicator = new Replicator({
      store: { keys: () => ['k'], lookup: () => manifest },
      placementOf: () => ({ self: true, peers: [owner] }),
      self: () => ({ nodeId: 'a', grpc: 'a:1' }),
      logger: pino({ level: 'silent' }),
      onPurged: () => Promise.resolve(),
      writeCopies: 1,
      timeoutMs: 1000,
    } as unknown as ReplicatorOptions);
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
});
