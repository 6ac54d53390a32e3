import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Manifest } from '../cache/manifest.ts';
import { chooseVersion, type VersionAnswer } from './vote.ts';

const version = (root: string, createdAtMs: number): Manifest => ({
  key: 'k',
  size: 1,
  chunkSize: 1,
  chunks: [],
  root,
  createdAtMs,
});
const peer = (address: string) => ({ address });
type Peer = ReturnType<typeof peer>;
const found = (p: Peer, manifest: Manifest, holds = true, named: Peer[] = []): VersionAnswer<Peer> => ({
  kind: 'found',
  peer: p,
  manifest,
  holds,
  named,
});

describe('chooseVersion', () => {
  const v1 = version('r1', 1);
  const v2 = version('r2', 2);
  const [a, b, c] = [peer('a'), peer('b'), peer('c')];

  it('picks the version most holders support, each holder once', () => {
    const best = chooseVersion([found(a, v2), found(b, v1, true, [c, a]), found(c, v1), undefined]);
    assert.ok(best && best !== 'purged');
    assert.equal(best.manifest.root, 'r1');
    assert.deepEqual(
      best.holders.map((h) => h.address),
      ['b', 'c', 'a'],
    );
  });

  it('counts a peer that only names holders, not itself', () => {
    const best = chooseVersion([found(a, v1, false, [b])]);
    assert.ok(best && best !== 'purged');
    assert.deepEqual(
      best.holders.map((h) => h.address),
      ['b'],
    );
    assert.equal(chooseVersion([found(a, v1, false)]), undefined, 'a version with no holder is none');
  });

  it('lets a purge win over older versions, and not over newer ones', () => {
    assert.equal(chooseVersion([found(a, v1), { kind: 'purged', purgedAtMs: 1 }]), 'purged');
    const best = chooseVersion([found(a, v2), found(b, v1), { kind: 'purged', purgedAtMs: 1 }]);
    assert.ok(best && best !== 'purged');
    assert.equal(best.manifest.root, 'r2', 'written after the purge');
  });

  it('says nothing when nobody knows the key', () => {
    assert.equal(chooseVersion([]), undefined);
    assert.equal(chooseVersion([undefined, undefined]), undefined);
  });
});
