import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Manifest } from '../cache/manifest.ts';
import { FakeClock } from '../time/clock.ts';
import { HOLDER_TTL_MS, HolderIndex, MAX_DIGESTS, MAX_KEYS } from './holder-index.ts';

const manifest = (key: string, root = 'r1', createdAtMs = 1, chunks = 1) =>
  ({
    key,
    root,
    createdAtMs,
    size: chunks,
    chunkSize: 1,
    chunks: Array.from({ length: chunks }, (_, i) => `d${i}`),
  }) as Manifest;
const a = { nodeId: 'a', grpc: 'a:1' };
const b = { nodeId: 'b', grpc: 'b:1' };

describe('HolderIndex', () => {
  it('answers with the live holders of the newest version, and forgets expired ones', () => {
    const clock = new FakeClock();
    const index = new HolderIndex(clock);
    index.record(manifest('k'), a);
    index.record(manifest('k'), b);
    assert.deepEqual(index.lookup('k')?.holders, [a, b]);
    index.record(manifest('k', 'old', 0), a); // an older version changes nothing
    assert.equal(index.lookup('k')?.manifest.root, 'r1');
    index.record(manifest('k', 'r2', 2), b); // a newer one replaces the version and its holders
    assert.deepEqual(index.lookup('k')?.holders, [b]);
    clock.advance(HOLDER_TTL_MS);
    assert.equal(index.lookup('k'), undefined);
  });

  it('drops keys whose holders all expired as new records come, not only when looked up', () => {
    const clock = new FakeClock();
    const index = new HolderIndex(clock);
    index.record(manifest('k1'), a);
    index.record(manifest('k2'), a);
    clock.advance(HOLDER_TTL_MS / 2);
    index.record(manifest('k1'), b); // renewed: k1 now lasts longer than k2
    clock.advance(HOLDER_TTL_MS / 2);
    index.record(manifest('k3'), a);
    assert.equal(index.size, 2, 'k2 went; k1 (renewed) and k3 stay');
    assert.deepEqual(index.lookup('k1')?.holders, [b]);
    clock.advance(HOLDER_TTL_MS);
    index.record(manifest('k4'), a);
    assert.equal(index.size, 1);
  });

  it('forgets a holder that released the key, and the key with its last holder', () => {
    const index = new HolderIndex(new FakeClock());
    index.record(manifest('k', 'r1', 1, 3), a);
    index.record(manifest('k', 'r1', 1, 3), b);
    index.release('k', 'a');
    assert.deepEqual(index.lookup('k')?.holders, [b]);
    index.release('k', 'a'); // again, and for keys or holders it never had: nothing changes
    index.release('other', 'b');
    assert.deepEqual(index.lookup('k')?.holders, [b]);
    assert.equal(index.digests, 3);
    index.release('k', 'b');
    assert.equal(index.lookup('k'), undefined);
    assert.equal(index.size, 0);
    assert.equal(index.digests, 0, 'its manifest went with it');
  });

  it('names no holder of a version that has expired', () => {
    const clock = new FakeClock();
    const index = new HolderIndex(clock);
    index.record({ ...manifest('k'), expiresAtMs: clock.now() + 1000 }, a);
    assert.deepEqual(index.lookup('k')?.holders, [a]);
    clock.advance(1000);
    assert.equal(index.lookup('k'), undefined);
    assert.equal(index.size, 0);
  });

  it('keeps at most MAX_KEYS keys, the oldest recorded going first', () => {
    const index = new HolderIndex(new FakeClock());
    for (let i = 0; i <= MAX_KEYS; i++) index.record(manifest(`k${i}`), a);
    assert.equal(index.size, MAX_KEYS);
    assert.equal(index.lookup('k0'), undefined);
    assert.ok(index.lookup(`k${MAX_KEYS}`));
  });

  // A member's Hold names any key: without this, every node kept up to MAX_KEYS keys of its choice
  // for HOLDER_TTL_MS each, whether or not anyone would ask this node about them.
  it('records only the keys this node owns', () => {
    const index = new HolderIndex(new FakeClock(), { owns: (key) => key.startsWith('mine/') });
    index.record(manifest('mine/k'), a);
    index.record(manifest('theirs/k'), a);
    assert.deepEqual(index.lookup('mine/k')?.holders, [a]);
    assert.equal(index.lookup('theirs/k'), undefined);
    assert.equal(index.size, 1);
  });

  // One Hold may carry a manifest of a million chunks (a gRPC message may be 64 MiB): bounding keys
  // alone left the index's memory to whoever sent Holds.
  it('keeps at most MAX_DIGESTS chunk digests over all keys, the oldest recorded going first', () => {
    const index = new HolderIndex(new FakeClock());
    const third = Math.floor(MAX_DIGESTS / 3);
    for (let i = 0; i < 4; i++) index.record(manifest(`k${i}`, 'r1', 1, third), a);
    assert.equal(index.size, 3);
    assert.equal(index.lookup('k0'), undefined, 'the oldest went');
    assert.equal(index.digests, 3 * third);
    index.record(manifest('huge', 'r1', 1, MAX_DIGESTS + 1), b);
    assert.equal(index.lookup('huge'), undefined, 'more than the whole bound: not taken');
    assert.ok(index.lookup('k3'), 'and it pushed nothing out');
    index.record(manifest('k3', 'r2', 2, 1), b); // a newer version replaces the old one's digests
    index.forget('k2');
    assert.equal(index.digests, third + 1);
  });
});
