import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HotTier } from './hot-tier.ts';

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
});
