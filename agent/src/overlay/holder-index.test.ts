import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Manifest } from '../cache/manifest.ts';
import { FakeClock } from '../time/clock.ts';
import { HOLDER_TTL_MS, HolderIndex, MAX_KEYS } from './holder-index.ts';

const manifest = (key: string, root = 'r1', createdAtMs = 1) => ({ key, root, createdAtMs }) as Manifest;
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

  it('keeps at most MAX_KEYS keys, the oldest recorded going first', () => {
    const index = new HolderIndex(new FakeClock());
    for (let i = 0; i <= MAX_KEYS; i++) index.record(manifest(`k${i}`), a);
    assert.equal(index.size, MAX_KEYS);
    assert.equal(index.lookup('k0'), undefined);
    assert.ok(index.lookup(`k${MAX_KEYS}`));
  });
});
