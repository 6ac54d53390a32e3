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

  it('picks the newest version that has a holder, its holders each once', () => {
    const best = chooseVersion([found(a, v1), found(b, v2, true, [c, b]), found(c, v2), undefined]);
    assert.ok(best && best !== 'purged');
    assert.equal(best.manifest.root, 'r2');
    assert.deepEqual(
      best.holders.map((h) => h.address),
      ['b', 'c'],
    );
  });

  // The review's case: one lying owner names members as holders of an older version (they need only
  // be members; nothing proves they hold it). docs/security.md: a node cannot replace a newer
  // version with an older one.
  it('does not let holders an answer names outvote a newer version (no rollback by one liar)', () => {
    const [m, d, e] = [peer('m'), peer('d'), peer('e')];
    const newer = version('v2', 2000);
    const older = version('v1', 1000);
    const best = chooseVersion([found(a, newer), found(b, newer), found(m, older, true, [c, d, e])]);
    assert.ok(best && best !== 'purged');
    assert.equal(best.manifest.root, 'v2', 'the newest signed version, not the most holders named');
    assert.deepEqual(
      best.holders.map((h) => h.address),
      ['a', 'b'],
    );
  });

  it('breaks a tie between versions made in the same millisecond by holders, then by root, in any order of answers', () => {
    const [x, y] = [version('rx', 5), version('ry', 5)];
    for (const answers of [
      [found(a, x), found(b, y), found(c, y)],
      [found(c, y), found(a, x), found(b, y)],
    ]) {
      const best = chooseVersion(answers);
      assert.ok(best && best !== 'purged');
      assert.equal(best.manifest.root, 'ry', 'more holders');
    }
    for (const answers of [
      [found(a, y), found(b, x)],
      [found(b, x), found(a, y)],
    ]) {
      const best = chooseVersion(answers);
      assert.ok(best && best !== 'purged');
      assert.equal(best.manifest.root, 'rx', 'as many holders: the lower root, whoever answered first');
    }
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

  it('believes no version or purge dated further ahead than clocks may disagree (signed or not)', () => {
    const now = 1_000_000_000_000;
    const future = version('r9', now + 5 * 60_000 + 1);
    const honest = version('r3', now - 10);
    const best = chooseVersion([found(a, future), found(b, honest)], now);
    assert.ok(best && best !== 'purged');
    assert.equal(best.manifest.root, 'r3');
    const purge = (purgedAtMs: number) => ({ kind: 'purged' as const, purgedAtMs });
    const kept = chooseVersion([purge(now + 5 * 60_000 + 1), found(b, honest)], now);
    assert.ok(kept && kept !== 'purged', 'a purge from the far future hides nothing');
    // Within the skew, as a node's clock may run ahead: believed.
    const ahead = version('r8', now + 5 * 60_000);
    const newest = chooseVersion([found(a, ahead), found(b, honest)], now);
    assert.ok(newest && newest !== 'purged');
    assert.equal(newest.manifest.root, 'r8');
  });

  it('says nothing when nobody knows the key', () => {
    assert.equal(chooseVersion([]), undefined);
    assert.equal(chooseVersion([undefined, undefined]), undefined);
  });
});
