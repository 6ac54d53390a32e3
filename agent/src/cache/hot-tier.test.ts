import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HotTier, SLAB_BYTES } from './hot-tier.ts';
import { seeded } from '../../harness/seeded.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

/** The bytes of chunk `n`: its size and a fill from its number, so any mix-up shows. */
const chunk = (n: number, size: number) => {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (n * 31 + i) & 0xff;
  return b;
};

describe('HotTier', () => {
  it('stays within its byte bound, dropping the least recently used', () => {
    const t = new HotTier(100);
    t.set('a', Buffer.alloc(20));
    t.set('b', Buffer.alloc(20));
    t.set('c', Buffer.alloc(20));
    t.get('a');
    t.set('d', Buffer.alloc(20));
    t.set('e', Buffer.alloc(20));
    t.set('f', Buffer.alloc(20));
    assert.ok(t.bytes <= 100);
    assert.ok(t.get('a'), 'recently used entry kept');
    assert.equal(t.get('b'), undefined);
  });

  it('serves cold chunks, which age from their set, hits or not, and go first past their share', () => {
    const t = new HotTier(1000);
    for (const d of ['a', 'b', 'c', 'd', 'e']) t.set(d, chunk(d.charCodeAt(0), 100)); // 500 in use
    // A download too large for the tier passes through it: 10 chunks of 100, cold, each read.
    for (let i = 0; i < 10; i++) {
      t.set(`m${i}`, chunk(i, 100), true);
      assert.deepEqual(t.get(`m${i}`), chunk(i, 100), 'a cold chunk serves its readers');
      assert.ok(t.bytes <= 1000);
    }
    // The last stretch of the download stays, in the room the others left; the oldest went first.
    assert.equal(t.coldBytes, 500);
    for (let i = 0; i < 5; i++) assert.equal(t.get(`m${i}`), undefined, `m${i} gone`);
    for (let i = 5; i < 10; i++) assert.ok(t.get(`m${i}`), `m${i} kept`);
    for (const d of ['a', 'b', 'c', 'd', 'e']) assert.ok(t.get(d), `${d}, in use, kept`);
    // Chunks used since take the room back: cold ones go past their share, then because they are
    // older than the least recently used other chunk (the hits above did not make them younger).
    for (const d of ['f', 'g', 'h', 'i', 'j', 'k']) t.set(d, chunk(d.charCodeAt(0), 100));
    assert.equal(t.coldBytes, 0, 'the download left nothing behind');
    assert.equal(t.get('a'), undefined, 'then the least recently used went');
    for (const d of ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k']) assert.ok(t.get(d), `${d} kept`);
  });

  it('makes a cold chunk set again as not cold an ordinary one, and counts a cold one deleted no more', () => {
    const t = new HotTier(1000);
    t.set('x', chunk(1, 100), true);
    t.set('y', chunk(2, 100), true);
    t.set('x', chunk(1, 100)); // a small object's own chunk, that a download had set cold
    assert.equal(t.coldBytes, 100);
    t.delete('y');
    assert.equal(t.coldBytes, 0);
    assert.equal(t.bytes, 100);
    // x is used again and again: it stays while other chunks come and go.
    for (let n = 0; n < 30; n++) {
      t.set(`o${n}`, chunk(n, 100));
      assert.ok(t.get('x'), `x kept at ${n}`);
    }
  });

  it('refuses entries larger than a quarter of the tier', () => {
    const t = new HotTier(100);
    t.set('big', Buffer.alloc(26));
    assert.equal(t.get('big'), undefined);
    assert.equal(t.bytes, 0);
  });

  it('counts a chunk set twice once: its bytes, and room for the others', () => {
    const t = new HotTier(100);
    t.set('a', Buffer.alloc(20));
    t.set('a', Buffer.alloc(20)); // the same digest again (a second download, a read of it)
    assert.equal(t.bytes, 20);
    for (const d of ['b', 'c', 'd', 'e']) t.set(d, Buffer.alloc(20));
    assert.equal(t.bytes, 100, 'five chunks of 20 fill it');
    for (const d of ['a', 'b', 'c', 'd', 'e']) assert.ok(t.get(d), `${d} kept`);
    t.delete('a');
    assert.equal(t.bytes, 80, 'deleted, it leaves nothing counted');
  });

  it('keeps a copy of a small chunk, not the memory it is a view into', () => {
    const t = new HotTier(64 * MiB);
    const body = Buffer.alloc(MiB, 7); // a request body, say: the chunk is a view into it
    t.set('a', body.subarray(1000, 5000));
    const kept = t.get('a')!;
    assert.equal(kept.length, 4000);
    assert.notEqual(kept.buffer, body.buffer, 'the tier would keep the whole MiB alive');
    body.fill(9); // the body's memory reused by its owner
    assert.ok(
      kept.every((b) => b === 7),
      'the copy stays as it was',
    );
    assert.equal(t.liveBytes, 4000);
    assert.equal(t.bytes, SLAB_BYTES, 'the slab is counted whole');
    // A larger chunk that is a view gets a Buffer of its own; one that already is one is kept as is.
    const big = Buffer.alloc(4 * MiB, 1);
    t.set('b', big.subarray(0, 2 * MiB));
    assert.notEqual(t.get('b')!.buffer, big.buffer);
    const own = Buffer.alloc(2 * MiB, 2);
    t.set('c', own);
    assert.equal(t.get('c'), own);
    assert.equal(t.bytes, SLAB_BYTES + 4 * MiB);
  });

  it('never writes a slab twice: a view handed out before a delete keeps its bytes', () => {
    const t = new HotTier(64 * MiB);
    t.set('a', chunk(1, 4 * KiB));
    const view = t.get('a')!; // a response still being written
    t.delete('a'); // the object deleted meanwhile: the slab holds nothing now
    t.set('b', chunk(2, 4 * KiB));
    assert.deepEqual(view, chunk(1, 4 * KiB));
    assert.deepEqual(t.get('b'), chunk(2, 4 * KiB));
  });

  it('compacts slabs mostly unused instead of dropping chunks still in use', () => {
    const t = new HotTier(16 * MiB);
    const size = 64 * KiB; // 16 a slab: 256 fill the tier
    for (let n = 0; n < 256; n++) t.set(`c${n}`, chunk(n, size));
    assert.equal(t.slabs, 16);
    assert.equal(t.bytes, 16 * MiB);
    for (let n = 0; n < 256; n++) if (n % 4 !== 0) t.delete(`c${n}`);
    assert.equal(t.liveBytes, 4 * MiB);
    assert.equal(t.slabs, 16, 'every slab still holds a quarter');
    const before = [...Array(64).keys()].map((i) => t.get(`c${i * 4}`)!);
    // 6 MiB more: 22 MiB of slabs without compaction, so the least recently used would have to go.
    for (let n = 256; n < 256 + 96; n++) t.set(`c${n}`, chunk(n, size));
    assert.ok(t.bytes <= 16 * MiB, `${t.bytes} bytes held`);
    assert.equal(t.liveBytes, 10 * MiB, 'no chunk dropped: the sparse slabs were compacted');
    for (let n = 0; n < 256 + 96; n++) {
      if (n < 256 && n % 4 !== 0) continue;
      assert.deepEqual(t.get(`c${n}`), chunk(n, size), `c${n}`);
    }
    // Views handed out before the move still hold their bytes.
    before.forEach((view, i) => assert.deepEqual(view, chunk(i * 4, size)));
  });

  it('never holds more than its bound nor serves a wrong byte, whatever the mix (seeded)', () => {
    const random = seeded(11);
    const t = new HotTier(8 * MiB);
    const sizes = new Map<string, { n: number; size: number }>();
    const handedOut: { view: Buffer; n: number; size: number }[] = [];
    for (let op = 0; op < 20_000; op++) {
      const n = Math.floor(random() * 2000);
      const digest = `d${n}`;
      const r = random();
      if (r < 0.5) {
        const size = 1 + Math.floor(random() ** 3 * 600 * KiB);
        if (!sizes.has(digest)) sizes.set(digest, { n, size });
        const known = sizes.get(digest)!;
        t.set(digest, chunk(known.n, known.size), random() < 0.3); // some cold, as a large download's
      } else if (r < 0.9) {
        const got = t.get(digest);
        if (got) {
          const known = sizes.get(digest)!;
          assert.deepEqual(got, chunk(known.n, known.size), `${digest} at op ${op}`);
          if (handedOut.length < 50) handedOut.push({ view: got, ...known });
        }
      } else t.delete(digest);
      assert.ok(t.bytes <= t.maxBytes, `${t.bytes} bytes held at op ${op}`);
      assert.ok(t.liveBytes <= t.bytes);
      assert.ok(t.coldBytes >= 0 && t.coldBytes <= t.liveBytes, `${t.coldBytes} cold bytes at op ${op}`);
    }
    assert.ok(t.liveBytes > t.maxBytes / 2, `only ${t.liveBytes} bytes of chunks kept`);
    for (const { view, n, size } of handedOut) assert.deepEqual(view, chunk(n, size));
  });

  it('stays nearly full of chunks under random reads (sparse slabs compacted, not left)', () => {
    const random = seeded(7);
    const t = new HotTier(16 * MiB);
    const size = 4 * KiB;
    const universe = ((16 * MiB) / size) * 3; // three times what fits
    const fill = new Map<number, Buffer>();
    const data = (n: number) => fill.get(n) ?? fill.set(n, chunk(n, size)).get(n)!;
    let lowest = 1;
    for (let op = 0; op < 200_000; op++) {
      const n = Math.floor(random() * universe);
      if (!t.get(`k${n}`)) t.set(`k${n}`, data(n));
      if (op > 50_000) lowest = Math.min(lowest, t.liveBytes / t.maxBytes);
    }
    // Slabs may waste up to an eighth of the tier before one is compacted.
    assert.ok(lowest > 0.8, `chunks filled only ${(lowest * 100).toFixed(1)}% of the tier at one point`);
  });

  it('frees room for one more chunk without dropping much more than an eighth of the tier', () => {
    // Every slab full, and the order of use across slabs (chunk j of every slab, then j + 1): each
    // eviction takes from another slab, and none frees a slab by itself.
    const t = new HotTier(16 * MiB);
    const size = 4 * KiB;
    const perSlab = SLAB_BYTES / size;
    const slabs = (16 * MiB) / SLAB_BYTES;
    for (let n = 0; n < perSlab * slabs; n++) t.set(`c${n}`, chunk(n, size));
    for (let j = 0; j < perSlab; j++) for (let s = 0; s < slabs; s++) t.get(`c${s * perSlab + j}`);
    const before = t.liveBytes;
    t.set('one-more', chunk(-1, size));
    const dropped = before + size - t.liveBytes;
    assert.ok(t.bytes <= t.maxBytes);
    assert.ok(
      dropped <= (16 * MiB) / 8 + SLAB_BYTES,
      `one set dropped ${(dropped / MiB).toFixed(1)} MiB of chunks from a 16 MiB tier`,
    );
  });
});
