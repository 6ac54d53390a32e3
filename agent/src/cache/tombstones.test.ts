import assert from 'node:assert/strict';
import { appendFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { FakeClock } from '../time/clock.ts';
import { MAX_TOMBSTONES, Tombstones } from './tombstones.ts';

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

  it('does not record a purge older than tombstones are kept (one replayed long after): no write, no place', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      const clock = new FakeClock(1_000_000);
      const t = await Tombstones.open(own, clock, 60_000);
      await t.record('live', clock.now() - 1000);
      const journal = await readFile(join(own, 'tombstones.log'), 'utf8');
      assert.equal(t.keeps(clock.now() - 60_000), false);
      assert.equal(t.keeps(clock.now() - 59_999), true);
      await t.record('old', clock.now() - 60_000);
      assert.equal(t.purgedAt('old'), undefined);
      assert.equal(t.size, 1);
      assert.equal(await readFile(join(own, 'tombstones.log'), 'utf8'), journal, 'nothing written');
    } finally {
      await rm(own, { recursive: true, force: true });
    }
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

  it('keeps one copy of each signer’s certificate for all its tombstones, in a mesh of any size', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      setFlagsFromString('--expose-gc');
      const gc = runInNewContext('gc') as () => void;
      // Many signers; each purge's certificate a copy, as the control plane's parse gives them.
      const signers = 400;
      const certificates = Array.from({ length: signers }, (_, i) => {
        const der = Buffer.alloc(600, 7); // about a node certificate's size
        der.writeUInt32BE(i);
        return der.toString('base64');
      });
      const count = 12_000;
      const t = await Tombstones.open(own, new FakeClock(1000), 60_000);
      gc();
      const before = process.memoryUsage().heapUsed;
      const saved: Promise<void>[] = [];
      for (let i = 0; i < count; i++) {
        // As the control plane hands a purge over: its event's text parsed, then let go.
        const event = JSON.stringify({
          certificate: certificates[i % signers],
          value: Buffer.alloc(70, i).toString('base64'),
        });
        saved.push(t.record(`k${i}`, 5000, JSON.parse(event) as { certificate: string; value: string }));
      }
      await Promise.all(saved);
      gc();
      const each = (process.memoryUsage().heapUsed - before) / count;
      assert.equal(t.size, count);
      assert.equal(t.signatureOf('k7')?.certificate, certificates[7]);
      // With a copy each, about 1,400 bytes; shared, about 600.
      assert.ok(each < 1000, `${Math.round(each)} bytes of heap per tombstone`);
      const reopened = await Tombstones.open(own, new FakeClock(1000), 60_000);
      assert.equal(reopened.signatureOf(`k${count - 1}`)?.certificate, certificates[(count - 1) % signers]);
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });

  it('keeps at most MAX_TOMBSTONES, the oldest recorded going first, from the files and from purges', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      const over = MAX_TOMBSTONES + 5;
      const saved = Object.fromEntries(Array.from({ length: over }, (_, i) => [`k${i}`, 1000 + i]));
      await writeFile(join(own, 'tombstones.json'), JSON.stringify(saved));
      const clock = new FakeClock(1000);
      const t = await Tombstones.open(own, clock, 60_000);
      assert.equal(t.size, MAX_TOMBSTONES, 'a snapshot past the cap is cut at open');
      assert.equal(t.purgedAt('k4'), undefined, 'the oldest went');
      assert.equal(t.purgedAt('k5'), 1005);
      await t.record('new', 9000);
      assert.equal(t.size, MAX_TOMBSTONES, 'a purge past the cap pushes the oldest out');
      assert.equal(t.purgedAt('k5'), undefined);
      assert.equal(t.purgedAt('new'), 9000);
      const reopened = await Tombstones.open(own, clock, 60_000);
      assert.equal(reopened.size, MAX_TOMBSTONES);
      assert.equal(reopened.purgedAt('new'), 9000);
      assert.equal(reopened.purgedAt(`k${over - 1}`), 1000 + over - 1);
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });

  it('past MAX_TOMBSTONES, pushes out the oldest purges of the node that signed the most, not the others’', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      // Nodes told apart by their certificates (base64; their content is not read here). The flood
      // names many clients: the node that signed them is what counts.
      const node = (name: string) => Buffer.from(`certificate of ${name}`).toString('base64');
      const by = (n: string, client = 'c') => ({
        certificate: node(n),
        value: 'U0lH',
        by: `token:${client}`,
      });
      // Node A's ten purges are the oldest; a flood of purges signed by node F fills the rest, and
      // five more of its own than the cap holds.
      const saved: Record<string, unknown> = {};
      for (let i = 0; i < 10; i++) saved[`a/${i}`] = { at: 1000 + i, signature: by('a') };
      for (let i = 0; i < MAX_TOMBSTONES - 5; i++)
        saved[`f/${i}`] = { at: 2000 + i, signature: by('f', `client-${i}`) };
      await writeFile(join(own, 'tombstones.json'), JSON.stringify(saved));
      const clock = new FakeClock(1000);
      const t = await Tombstones.open(own, clock, 7 * 24 * 3600 * 1000);
      assert.equal(t.size, MAX_TOMBSTONES, 'a snapshot past the cap is cut at open');
      for (let i = 0; i < 10; i++) assert.equal(t.purgedAt(`a/${i}`), 1000 + i, 'from the flood, not A');
      assert.equal(t.purgedAt('f/4'), undefined, 'the flood’s own oldest went');
      assert.equal(t.purgedAt('f/5'), 2005);
      // More of the flood, and a purge signed by a third node: each pushes out the flood's oldest.
      for (let i = 0; i < 20; i++) await t.record(`f/more-${i}`, 9000 + i, by('f', `more-${i}`));
      await t.record('b/0', 9500, by('b'));
      assert.equal(t.size, MAX_TOMBSTONES);
      for (let i = 0; i < 10; i++) assert.equal(t.purgedAt(`a/${i}`), 1000 + i);
      assert.equal(t.purgedAt('b/0'), 9500);
      assert.equal(t.purgedAt('f/25'), undefined);
      assert.equal(t.purgedAt('f/26'), 2026);
      const reopened = await Tombstones.open(own, clock, 7 * 24 * 3600 * 1000);
      assert.equal(reopened.size, MAX_TOMBSTONES);
      assert.equal(reopened.purgedAt('a/0'), 1000);
      assert.deepEqual(reopened.signatureOf('a/0'), by('a'));
      assert.equal(reopened.purgedAt('f/more-19'), 9019);
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });

  it('past MAX_TOMBSTONES, drops expired tombstones before any live one, running and at a restart', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      const ttl = 60_000;
      const node = (name: string) => ({ certificate: Buffer.from(name).toString('base64'), value: 'U0lH' });
      // Node E's 100 purges will have expired; node A, which holds the most, has the rest, live.
      const saved: Record<string, unknown> = {};
      for (let i = 0; i < 100; i++) saved[`e/${i}`] = { at: 1000, signature: node('e') };
      for (let i = 0; i < MAX_TOMBSTONES - 100; i++) saved[`a/${i}`] = { at: 40_000, signature: node('a') };
      await writeFile(join(own, 'tombstones.json'), JSON.stringify(saved));
      const clock = new FakeClock(1000);
      const t = await Tombstones.open(own, clock, ttl);
      assert.equal(t.size, MAX_TOMBSTONES);
      clock.advance(ttl); // E's have expired, A's not
      for (let i = 0; i < 5; i++) await t.record(`a/new-${i}`, 70_000, node('a'));
      assert.equal(t.size, MAX_TOMBSTONES - 95, 'the expired went, not A’s oldest');
      assert.equal(t.purgedAt('a/0'), 40_000);
      // At a restart, the expired ones the files still hold are not taken in.
      const again = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
      try {
        await writeFile(join(again, 'tombstones.json'), JSON.stringify(saved));
        await writeFile(
          join(again, 'tombstones.log'),
          Array.from({ length: 5 }, (_, i) => `${JSON.stringify([`a/new-${i}`, 70_000, node('a')])}\n`).join(
            '',
          ),
        );
        const reopened = await Tombstones.open(again, clock, ttl);
        assert.equal(reopened.size, MAX_TOMBSTONES - 95);
        assert.equal(reopened.purgedAt('a/0'), 40_000);
        assert.equal(reopened.purgedAt('a/new-4'), 70_000);
      } finally {
        await rm(again, { recursive: true, force: true });
      }
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });

  it('replays a purge recorded again after the cap pushed it out as the newest, as it was', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      // k was recorded, pushed out by MAX_TOMBSTONES later purges, then recorded again (the same purge
      // heard anew): running, it is the newest and the first of the others went.
      const line = (key: string, at: number) => `${JSON.stringify([key, at])}\n`;
      const others = Array.from({ length: MAX_TOMBSTONES }, (_, i) => line(`o/${i}`, 2000)).join('');
      await writeFile(join(own, 'tombstones.log'), line('k', 1000) + others + line('k', 1000));
      const t = await Tombstones.open(own, new FakeClock(1000), 7 * 24 * 3600 * 1000);
      assert.equal(t.size, MAX_TOMBSTONES);
      assert.equal(t.purgedAt('k'), 1000, 'the purge recorded last is kept');
      assert.equal(t.purgedAt('o/0'), undefined, 'the oldest other went');
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });

  it('leaves out a journal a crash left between a snapshot and its truncation, whose lines the snapshot holds', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      const clock = new FakeClock(1000);
      const ttl = 60_000;
      let t = await Tombstones.open(own, clock, ttl, 3);
      for (const [i, key] of ['a', 'b', 'c', 'd'].entries()) await t.record(key, 1000 + i); // d pushes a out
      // A torn line: the next write is a snapshot. Keep the journal as it was before that write.
      await appendFile(join(own, 'tombstones.log'), '["torn",1');
      t = await Tombstones.open(own, clock, ttl, 3);
      const stale = await readFile(join(own, 'tombstones.log'));
      await t.record('a', 1000); // heard again: pushes b out; written as a snapshot
      assert.deepEqual(
        ['a', 'b', 'c', 'd'].map((k) => t.purgedAt(k)),
        [1000, undefined, 1002, 1003],
      );
      // A crash after the snapshot's write, before the journal's truncation: the old journal stays.
      await writeFile(join(own, 'tombstones.log'), stale);
      const reopened = await Tombstones.open(own, clock, ttl, 3);
      assert.deepEqual(
        ['a', 'b', 'c', 'd'].map((k) => reopened.purgedAt(k)),
        [1000, undefined, 1002, 1003],
        'the snapshot as it was written, the stale journal left out',
      );
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });

  it('keeps the recorded order of keys made of digits across a snapshot (an object lists those first)', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      const clock = new FakeClock(1000);
      const ttl = 60_000;
      let t = await Tombstones.open(own, clock, ttl, 4);
      for (const [i, key] of ['b', 'a', '7', '10'].entries()) await t.record(key, 1000 + i);
      // A torn line: the next write is a snapshot, of a, 7, 10 and c once c has pushed b out.
      await appendFile(join(own, 'tombstones.log'), '["torn",1');
      t = await Tombstones.open(own, clock, ttl, 4);
      await t.record('c', 1004);
      const snapshot = JSON.parse(await readFile(join(own, 'tombstones.json'), 'utf8')) as object;
      assert.deepEqual(Object.keys(snapshot), ['7', '10', '', 'a', 'c'], 'as JavaScript lists them');
      // Reopened, a is still the oldest: the next purges push out a, then 7, then 10.
      t = await Tombstones.open(own, clock, ttl, 4);
      const left = () => ['a', '7', '10', 'c', 'd', 'e', 'f'].filter((k) => t.purgedAt(k) !== undefined);
      await t.record('d', 1005);
      assert.deepEqual(left(), ['7', '10', 'c', 'd']);
      await t.record('e', 1006);
      await t.record('f', 1007);
      assert.deepEqual(left(), ['c', 'd', 'e', 'f']);
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });

  it('drops expired tombstones first after many records of the same keys (their stale ages made over)', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      const clock = new FakeClock(1000);
      const ttl = 60_000;
      const node = (name: string) => ({ certificate: Buffer.from(name).toString('base64'), value: 'U0lH' });
      const t = await Tombstones.open(own, clock, ttl, 3);
      await t.record('old', 1000, node('x'));
      // 3,000 records of two keys by node y, each later than the last: the ages kept grow past what
      // is held, and are made over from the tombstones now and then.
      const pending: Promise<void>[] = [];
      for (let i = 1; i <= 3000; i++) pending.push(t.record(i % 2 ? 'a' : 'b', 1000 + i * 10, node('y')));
      await Promise.all(pending);
      assert.equal(t.size, 3);
      clock.advance(ttl + 5); // x's has expired; y's have not
      await t.record('c', 40_000, node('y'));
      assert.deepEqual(
        ['a', 'b', 'c'].map((k) => t.purgedAt(k)),
        [30_990, 31_000, 40_000],
        'the expired one went, not the oldest of y, which holds the most',
      );
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
      // The journal and the write's staging directory are not what they must be: saves fail.
      await rm(join(own, 'tmp'), { recursive: true });
      await writeFile(join(own, 'tmp'), '');
      await mkdir(join(own, 'tombstones.log'));
      await assert.rejects(t.record('a', 2000));
      await rm(join(own, 'tmp'));
      await mkdir(join(own, 'tmp'));
      await rm(join(own, 'tombstones.log'), { recursive: true });
      await t.record('b', 3000); // the disk is back: this save succeeds, and carries 'a' too
      const reopened = await Tombstones.open(own, clock, 60_000);
      assert.equal(reopened.purgedAt('a'), 2000);
      assert.equal(reopened.purgedAt('b'), 3000);
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });

  it('appends a line per purge, batches purges that come together, and folds the journal into the snapshot', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      const clock = new FakeClock(1000);
      const t = await Tombstones.open(own, clock, 60_000);
      await t.record('k0', 2000);
      const size = async (name: string) => (await stat(join(own, name)).catch(() => ({ size: 0 }))).size;
      assert.equal(await size('tombstones.json'), 0, 'no snapshot for one purge');
      assert.equal((await readFile(join(own, 'tombstones.log'), 'utf8')).trim(), '["k0",2000]');
      // 3000 purges, 100 at a time: the files never hold much more than the tombstones themselves.
      let largest = 0;
      for (let batch = 0; batch < 30; batch++) {
        await Promise.all(Array.from({ length: 100 }, (_, i) => t.record(`key/${batch * 100 + i}`, 3000)));
        largest = Math.max(largest, (await size('tombstones.json')) + (await size('tombstones.log')));
      }
      const reopened = await Tombstones.open(own, clock, 60_000);
      for (const key of ['k0', 'key/0', 'key/1999', 'key/2999']) assert.ok(reopened.purgedAt(key), key);
      const snapshot = await size('tombstones.json');
      assert.ok(snapshot > 0, 'the journal was folded into the snapshot');
      assert.ok(largest < 3 * snapshot, `files reached ${largest} B for a snapshot of ${snapshot} B`);
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });

  it('keeps every whole line of a journal torn by a crash, and writes whole files next time', async () => {
    const own = await mkdtemp(join(tmpdir(), 'edgemesh-tombs-'));
    try {
      await writeFile(join(own, 'tombstones.log'), '["a",2000]\n["b",3000]\n["c",40');
      const clock = new FakeClock(1000);
      const t = await Tombstones.open(own, clock, 60_000);
      assert.equal(t.purgedAt('a'), 2000);
      assert.equal(t.purgedAt('b'), 3000);
      assert.equal(t.purgedAt('c'), undefined);
      await t.record('d', 5000);
      assert.equal(
        await readFile(join(own, 'tombstones.log'), 'utf8'),
        '{"generation":1}\n',
        'folded into a fresh snapshot: a journal of its generation, with no purge yet',
      );
      const reopened = await Tombstones.open(own, clock, 60_000);
      assert.deepEqual(
        ['a', 'b', 'd'].map((k) => reopened.purgedAt(k)),
        [2000, 3000, 5000],
      );
    } finally {
      await rm(own, { recursive: true, force: true });
    }
  });
});
