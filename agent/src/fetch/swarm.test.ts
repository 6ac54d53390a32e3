import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_SWARM_KEYS, Progress, Seeder, Swarm } from './swarm.ts';

const MiB = 2 ** 20;
const head = { key: 'k', size: 12 * MiB, chunkSize: 4 * MiB };
const digest = (i: number) => i.toString(16).padStart(64, '0');

describe('Progress', () => {
  it('learns digests in order, ignores repeats and gaps, and tells subscribers', () => {
    const p = new Progress(head);
    const events: string[] = [];
    p.subscribe((e) => events.push(e.kind === 'digests' ? `d${e.first}+${e.digests.length}` : e.kind));
    p.addDigests(0, [digest(0)]);
    p.addDigests(0, [digest(0), digest(1)]);
    p.addDigests(5, [digest(5)]); // gap: ignored
    assert.deepEqual(p.digests, [digest(0), digest(1)]);
    p.hold(1, Buffer.from('x'));
    assert.deepEqual(p.chunk(digest(1)), Buffer.from('x'));
    p.written(1);
    assert.equal(p.chunk(digest(1)), undefined);
    assert.deepEqual(events, ['d0+1', 'd1+1', 'have']);
  });
});

describe('Swarm', () => {
  it('names recent members to each other, not to themselves, and tells of newcomers', () => {
    const swarm = new Swarm();
    const joined: string[] = [];
    const stop = swarm.onJoin('k', (h) => joined.push(h.nodeId));
    swarm.join('k', { nodeId: 'a', grpc: 'a:1' });
    swarm.join('k', { nodeId: 'b', grpc: 'b:1' });
    swarm.join('k', { nodeId: 'a', grpc: 'a:1' }); // again: not new
    stop();
    assert.deepEqual(joined, ['a', 'b']);
    assert.deepEqual(
      swarm.peersOf('k', 'a').map((h) => h.nodeId),
      ['b'],
    );
  });

  it('remembers the swarms of at most MAX_SWARM_KEYS keys, forgetting the one joined least recently first', () => {
    let now = 0;
    const swarm = new Swarm(() => now);
    const a = { nodeId: 'a', grpc: 'a:1' };
    const b = { nodeId: 'b', grpc: 'b:1' };
    const stop = swarm.onJoin('key-1', () => {}); // a download here follows key-1
    for (let i = 0; i < MAX_SWARM_KEYS + 500; i++) {
      swarm.join(`key-${i}`, a);
      if (i === MAX_SWARM_KEYS - 1) swarm.join('key-2', b); // joined again: the most recent then
      now += 1; // none expires (120 s): only the bound forgets
    }
    stop();
    assert.deepEqual(swarm.peersOf('key-0'), [], 'the least recent forgotten');
    assert.deepEqual(swarm.peersOf('key-500'), []);
    assert.deepEqual(swarm.peersOf('key-1'), [a], 'a key a download follows is kept');
    assert.equal(swarm.peersOf('key-2').length, 2, 'a key joined again is kept');
    assert.deepEqual(swarm.peersOf('key-502'), [a], 'the most recent kept');
    assert.deepEqual(swarm.peersOf(`key-${MAX_SWARM_KEYS + 499}`), [a]);
  });

  it('forgets a progress once it ends', () => {
    const swarm = new Swarm();
    const p = swarm.begin(head);
    assert.equal(swarm.get('k'), p);
    p.fail(new Error('x'));
    assert.equal(swarm.get('k'), undefined);
  });
});

describe('Seeder (super-seeding by the origin fetcher)', () => {
  it('shows each new chunk to one watcher, spreading them, and to all after the delay', async () => {
    const p = new Progress(head);
    p.addDigests(0, [digest(0), digest(1), digest(2)]);
    const seeder = new Seeder(p, 30);
    const seen: Record<string, number[]> = { a: [], b: [] };
    seeder.add((i) => seen.a!.push(i));
    seeder.add((i) => seen.b!.push(i));
    p.hold(0);
    p.hold(1);
    assert.equal(seen.a!.length + seen.b!.length, 2, 'each chunk shown once');
    assert.equal(seen.a!.length, 1, 'spread over the watchers');
    await new Promise((r) => setTimeout(r, 60)); // past the seeder's 30 ms delay: the delay is what is tested
    assert.deepEqual([...seen.a!].sort(), [0, 1]);
    assert.deepEqual([...seen.b!].sort(), [0, 1]);
    const late = seeder.add(() => undefined);
    assert.deepEqual([...late.initial].sort(), [0, 1], 'a late watcher sees what is public');
    seeder.close();
  });
});
