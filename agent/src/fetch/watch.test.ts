import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ObjectNotFoundError } from '../cache/errors.ts';
import type { Manifest } from '../cache/manifest.ts';
import type { Holder } from '../domain.ts';
import type { WatchEvent, WatchStream } from '../transport/peer-server.ts';
import { PeerFetchError } from './download.ts';
import { Seeder, Swarm } from './swarm.ts';
import { watchPolicy } from './watch.ts';

const MiB = 2 ** 20;
const head = { key: 'k', size: 12 * MiB, chunkSize: 4 * MiB };
const digest = (i: number) => i.toString(16).padStart(64, '0');
const manifest = {
  ...head,
  chunks: [digest(0), digest(1), digest(2)],
  root: 'ab',
  createdAtMs: 1,
} as Manifest;
const a: Holder = { nodeId: 'a', grpc: 'a:1' };
const b: Holder = { nodeId: 'b', grpc: 'b:1' };

/** A Watch call as the policy sees it: what it wrote, and how it ended. */
function recorder() {
  const events: WatchEvent[] = [];
  const closers: (() => void)[] = [];
  const call = {
    events,
    ended: false,
    failed: undefined as Error | undefined,
    /** Ended as a miss (NOT_FOUND): no one has the object. */
    gone: undefined as Error | undefined,
    close: () => closers.forEach((c) => c()),
  };
  const stream: WatchStream = {
    write: (event) => events.push({ ...event }),
    end: () => (call.ended = true),
    fail: (error) => (call.failed = error),
    gone: (error) => (call.gone = error),
    onClose: (listener) => closers.push(listener),
  };
  return { call, stream };
}

describe('watchPolicy', () => {
  const setup = (held?: Manifest) => {
    const swarm = new Swarm();
    const watch = watchPolicy({
      lookup: (key) => (key === held?.key ? held : undefined),
      swarm,
      trusted: (h) => h !== b,
    });
    return { swarm, watch };
  };

  it('refuses a key it neither holds nor is getting, and remembers no watcher of it', () => {
    const { swarm, watch } = setup(manifest);
    assert.equal(watch('nothing-here', a, recorder().stream), false);
    assert.deepEqual(swarm.peersOf('nothing-here'), [], 'a is no member of a swarm of it');
  });

  it('answers a held object with its manifest and the swarm, and joins confirmed watchers only', () => {
    const { swarm, watch } = setup(manifest);
    const first = recorder();
    assert.equal(watch('k', a, first.stream), true);
    assert.deepEqual(first.call.events, [{ manifest, peers: [] }]);
    assert.equal(first.call.ended, true);
    const second = recorder();
    assert.equal(watch('k', b, second.stream), true); // b is not confirmed: not named to others
    assert.deepEqual(second.call.events, [{ manifest, peers: [a] }]);
    assert.deepEqual(swarm.peersOf('k'), [a]);
  });

  it('says it is not getting a key it neither holds nor is getting', () => {
    const { watch } = setup();
    const call = recorder();
    assert.equal(watch('k', a, call.stream), false);
    assert.deepEqual(call.call.events, []);
  });

  it('shows an object in progress, then each step of it, newcomers, and the manifest at the end', () => {
    const { swarm, watch } = setup();
    const progress = swarm.begin(head);
    progress.addDigests(0, [digest(0), digest(1)]);
    progress.hold(0);
    const { call, stream } = recorder();
    assert.equal(watch('k', a, stream), true);
    progress.addDigests(2, [digest(2)]);
    progress.hold(1);
    swarm.join('k', b);
    swarm.join('k', a); // the watcher itself is not named to itself
    progress.complete(manifest);
    assert.deepEqual(call.events, [
      { head, firstDigest: 0, digests: [digest(0), digest(1)], have: [0], peers: [] },
      { firstDigest: 2, digests: [digest(2)] },
      { have: [1] },
      { peers: [b] },
      { manifest, peers: [b] },
    ]);
    assert.equal(call.ended, true);
  });

  it('fails the call when getting the object fails, and stops telling a watcher that left', () => {
    const { swarm, watch } = setup();
    const progress = swarm.begin(head);
    const gone = recorder();
    const staying = recorder();
    watch('k', a, gone.stream);
    watch('k', undefined, staying.stream);
    gone.call.close();
    progress.addDigests(0, [digest(0)]);
    swarm.join('k', b);
    progress.fail(new Error('origin down'));
    assert.equal(gone.call.events.length, 1, 'only the first event');
    assert.equal(gone.call.failed, undefined);
    assert.equal(staying.call.events.length, 3);
    assert.equal(staying.call.failed?.message, 'origin down');
  });

  it('ends the call as a miss when getting the object found no one has it, as a fault otherwise', () => {
    const cases: [Error, 'gone' | 'failed'][] = [
      [new PeerFetchError('k', ['peer a: NOT_FOUND'], 1), 'gone'], // every holder had let it go
      [new PeerFetchError('k', []), 'gone'], // no holder left to ask
      [new ObjectNotFoundError('k'), 'gone'], // the origin's 404
      [new PeerFetchError('k', ['peer a: NOT_FOUND', 'peer b: stalled'], 1), 'failed'],
      [new Error('origin down'), 'failed'],
    ];
    for (const [error, how] of cases) {
      const { swarm, watch } = setup();
      const progress = swarm.begin(head);
      const { call, stream } = recorder();
      watch('k', undefined, stream);
      progress.fail(error);
      assert.equal(call[how], error, `${error.message}: ${how}`);
      assert.equal(call[how === 'gone' ? 'failed' : 'gone'], undefined);
    }
  });

  it('lets the origin fetcher show each new chunk to one watcher first (super-seeding)', () => {
    const { swarm, watch } = setup();
    const progress = swarm.begin(head);
    progress.addDigests(0, [digest(0), digest(1), digest(2)]);
    const seeder = new Seeder(progress, 60_000);
    progress.seeder = seeder;
    const first = recorder();
    const second = recorder();
    watch('k', a, first.stream);
    watch('k', undefined, second.stream);
    progress.hold(0);
    progress.hold(1);
    const have = (r: ReturnType<typeof recorder>) => r.call.events.slice(1).flatMap((e) => e.have ?? []);
    assert.deepEqual([have(first), have(second)], [[0], [1]]);
    seeder.close();
  });
});
