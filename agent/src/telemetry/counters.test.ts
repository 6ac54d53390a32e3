import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Counters } from './counters.ts';

describe('Counters', () => {
  it('keeps the per-peer figures of known peers only, and the totals of all', () => {
    const counters = new Counters();
    counters.fromPeer('member', 10);
    counters.fromPeer('static', 20);
    counters.fromPeer('forgotten', 30);
    counters.fromPeer('late', 40); // a chunk from a peer after it was forgotten
    Counters.bump(counters.badChunksByPeer, 'forgotten');
    Counters.bump(counters.badChunksByPeer, 'member');
    counters.keepPeers((peer) => peer === 'member' || peer === 'static');
    assert.deepEqual(Object.fromEntries(counters.bytesFromPeer), { member: 10, static: 20 });
    assert.deepEqual(Object.fromEntries(counters.badChunksByPeer), { member: 1 });
    assert.equal(counters.bytesFromPeers, 100, 'the running total stays');
  });
});
