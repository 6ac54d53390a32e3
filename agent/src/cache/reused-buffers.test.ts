import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReusedBuffers } from './reused-buffers.ts';

describe('ReusedBuffers', () => {
  it('lends at most `most` buffers, frees one only when its last holder lets go (a view counts), and then lends the same memory again', () => {
    const buffers = new ReusedBuffers(1);
    const a = buffers.take(8)!;
    buffers.hold(a); // a reader
    buffers.hold(a.subarray(0, 4)); // another, with a view of part of it
    buffers.letGo(a); // the taker (its disk write done)
    assert.equal(buffers.take(8), undefined, 'still held');
    buffers.letGo(a.subarray(4));
    assert.equal(buffers.take(8), undefined, 'still held by one');
    buffers.letGo(a);
    const again = buffers.take(8)!;
    assert.equal(again.buffer, a.buffer, 'the same memory');
    buffers.letGo(again);
    buffers.letGo(again); // a second letGo while it is free changes nothing (once taken again, it would)
    buffers.hold(again); // nor does a hold of a free one
    assert.equal(buffers.take(8)!.buffer, a.buffer);
    assert.equal(buffers.take(8), undefined, 'not lent twice');
  });

  it('gives views of the asked size, and makes a larger buffer when a free one is too small', () => {
    const buffers = new ReusedBuffers(1);
    const big = buffers.take(16)!;
    buffers.letGo(big);
    const small = buffers.take(10)!;
    assert.equal(small.length, 10);
    assert.equal(small.buffer, big.buffer);
    buffers.letGo(small);
    const larger = buffers.take(32)!;
    assert.equal(larger.length, 32);
    assert.notEqual(larger.buffer, big.buffer);
  });

  it('never lends again a buffer someone keeps, and makes another in its place', () => {
    const buffers = new ReusedBuffers(1);
    const a = buffers.take(8)!;
    a.fill(7);
    buffers.keep(a); // sent to a peer from memory: no word of when it is done
    buffers.letGo(a); // the disk write ends: nothing
    const b = buffers.take(8)!;
    assert.notEqual(b.buffer, a.buffer);
    b.fill(1);
    assert.deepEqual([...a], [7, 7, 7, 7, 7, 7, 7, 7], 'the kept bytes are untouched');
    buffers.keep(Buffer.alloc(8)); // not one of its own: nothing
    assert.equal(buffers.take(8), undefined, 'still at most one made');
  });

  it('once closed, keeps no free buffer: those free go, those let go later too, and it lends none', () => {
    const buffers = new ReusedBuffers(2);
    const a = buffers.take(8)!;
    const b = buffers.take(8)!;
    buffers.letGo(a);
    buffers.close();
    assert.equal(buffers.take(8), undefined, 'a is gone, and nothing is lent after close');
    buffers.letGo(b); // a reader of the finished job lets go: not pooled
    assert.equal(buffers.take(8), undefined);
  });
});
