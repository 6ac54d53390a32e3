import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FakeClock } from '../time/clock.ts';
import { Tombstones } from './tombstones.ts';

describe('Tombstones', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('marks versions created at or before the purge as purged, survives restarts, and expires', async () => {
    const clock = new FakeClock(1000);
    const t = await Tombstones.open(dir, clock, 60_000);
    await t.record('k', 5000);
    await t.record('k', 4000); // an older purge changes nothing
    assert.equal(t.isPurged('k', 5000), true);
    assert.equal(t.isPurged('k', 5001), false, 'written after the purge: alive');
    assert.equal(t.isPurged('other', 1), false);
    const reopened = await Tombstones.open(dir, clock, 60_000);
    assert.equal(reopened.purgedAt('k'), 5000);
    clock.advance(65_000);
    assert.equal(reopened.purgedAt('k'), undefined, 'expired');
  });

  it('keeps a purge’s signature with it, across restarts, next to entries of the older form', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      await writeFile(join(own, 'tombstones.json'), JSON.stringify({ old: 3000 }));
      const clock = new FakeClock(1000);
      const t = await Tombstones.open(own, clock, 60_000);
      const signature = { certificate: 'Q0VSVA==', value: 'U0lH' };
      await t.record('signed', 5000, signature);
      const reopened = await Tombstones.open(own, clock, 60_000);
      assert.deepEqual(reopened.signatureOf('signed'), signature);
      assert.equal(reopened.purgedAt('signed'), 5000);
      assert.equal(reopened.purgedAt('old'), 3000);
      assert.equal(reopened.signatureOf('old'), undefined);
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });

  it('starts empty from a damaged file', async () => {
    const other = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    await writeFile(join(other, 'tombstones.json'), '{not json');
    assert.equal((await Tombstones.open(other, new FakeClock())).purgedAt('k'), undefined);
    await rm(other, { recursive: true, force: true });
  });

  it('saves again once the disk works again after a failed save (the chain heals)', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      const clock = new FakeClock(1000);
      const t = await Tombstones.open(own, clock, 60_000);
      // The write's staging directory is gone and a file stands in its place: saves fail.
      await rm(join(own, 'tmp'), { recursive: true });
      await writeFile(join(own, 'tmp'), '');
      await assert.rejects(t.record('a', 2000));
      await rm(join(own, 'tmp'));
      await mkdir(join(own, 'tmp'));
      await t.record('b', 3000); // the disk is back: this save succeeds, and carries 'a' too
      const reopened = await Tombstones.open(own, clock, 60_000);
      assert.equal(reopened.purgedAt('a'), 2000);
      assert.equal(reopened.purgedAt('b'), 3000);
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });
});
