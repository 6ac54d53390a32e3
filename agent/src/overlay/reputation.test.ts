import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FakeClock } from '../time/clock.ts';
import { DISTRUST_BELOW, Reputation } from './reputation.ts';

describe('peer reputation', () => {
  it('distrusts a peer that lies, and trusts it again once its score fades', () => {
    const clock = new FakeClock();
    const r = new Reputation(clock);
    for (let i = 0; i < 3; i++) r.record('liar', 'bad-chunk');
    r.record('slow', 'failed');
    assert.equal(r.trusted('liar'), false, `score ${r.score('liar')}`);
    assert.equal(r.trusted('slow'), true);
    assert.equal(r.distrusted(), 1);
    assert.ok(r.score('liar') < DISTRUST_BELOW);
    clock.advance(5 * 60_000); // one half-life
    assert.equal(r.trusted('liar'), true, `score ${r.score('liar')}`);
  });

  it('neither grows nor freezes a score when the clock is set back', () => {
    const clock = new FakeClock();
    const r = new Reputation(clock);
    for (let i = 0; i < 100; i++) r.record('p', 'good');
    r.record('liar', 'bad-chunk');
    const liar = r.score('liar');
    clock.advance(-60 * 60_000); // an hour back: twelve half-lives
    assert.equal(r.score('p'), 5, 'not 5 x 2^12 of credit');
    clock.advance(5 * 60_000); // one half-life after the jump
    assert.equal(r.score('liar'), liar / 2, 'it decays from the jump on, not frozen till the clock is back');
  });

  it('counts a report as old from a clock set back on, not fresh until the clock is back', () => {
    const clock = new FakeClock();
    const r = new Reputation(clock, { self: 'me', hearsayTtlMs: 30_000 });
    r.heard('a', ['victim'], clock.now());
    r.heard('b', ['victim'], clock.now());
    assert.equal(r.trusted('victim'), false);
    clock.advance(-60 * 60_000);
    assert.equal(r.trusted('victim'), false, 'still fresh just after the jump');
    clock.advance(30_001);
    assert.equal(r.trusted('victim'), true, 'stale 30 s after it');
  });

  it('lets good service build a little credit, never enough to hide a lie', () => {
    const r = new Reputation(new FakeClock());
    for (let i = 0; i < 100; i++) r.record('p', 'good');
    assert.equal(r.score('p'), 5);
    for (let i = 0; i < 4; i++) r.record('p', 'bad-manifest');
    assert.equal(r.trusted('p'), false);
    assert.deepEqual(r.snapshot(), { p: -19 });
  });

  it('avoids a node that two trusted peers report, never on one peer’s word, and forgets stale or withdrawn reports', () => {
    const clock = new FakeClock();
    const r = new Reputation(clock, { self: 'me', hearsayTtlMs: 30_000 });
    /** A report said now (each a millisecond after the one before). */
    const say = (reporter: string, nodes: string[]) => {
      clock.advance(1);
      r.heard(reporter, nodes, clock.now());
    };
    say('a', ['victim', 'me', 'a']);
    assert.equal(r.trusted('victim'), true, 'one report is not enough');
    assert.deepEqual(r.reported(), { victim: 1 }, 'what it says of itself or of this node is ignored');
    say('b', ['victim']);
    assert.equal(r.trusted('victim'), false, 'two are');
    assert.equal(r.distrusted(), 1);
    assert.deepEqual(r.ownDistrusted(), [], 'hearsay is never passed on');
    // A reporter this node itself distrusts does not count.
    for (let i = 0; i < 3; i++) r.record('b', 'bad-chunk');
    assert.equal(r.trusted('victim'), true);
    assert.deepEqual(r.ownDistrusted(), ['b']);
    say('c', ['victim']);
    assert.equal(r.trusted('victim'), false);
    // Reports fade: none is fresh after the TTL.
    clock.advance(30_001);
    assert.equal(r.trusted('victim'), true, 'stale reports');
    say('a', ['victim']);
    say('c', ['victim']);
    assert.equal(r.trusted('victim'), false);
    say('c', []);
    assert.equal(r.trusted('victim'), true, 'a withdrawn report');
  });

  it('cannot be flooded: a report keeps at most 64 nodes', () => {
    const clock = new FakeClock();
    const r = new Reputation(clock, { self: 'me' });
    const many = Array.from({ length: 1000 }, (_, i) => `n${i}`);
    r.heard('a', many, clock.now());
    r.heard('b', many, clock.now());
    assert.equal(r.distrusted(), 64);
  });

  it('keeps at most 10,000 reporters: stale ones make room, and what they said no longer counts', () => {
    const clock = new FakeClock();
    const r = new Reputation(clock, { self: 'me', hearsayTtlMs: 30_000 });
    for (let i = 0; i < 10_000; i++) r.heard(`r${i}`, ['victim'], clock.now());
    assert.equal(r.trusted('victim'), false);
    r.heard('late', ['other'], clock.now());
    assert.equal(r.reportedBy('other'), 0, 'no room while every report is fresh');
    clock.advance(60_000);
    r.heard('late', ['other'], clock.now());
    r.heard('later', ['other'], clock.now());
    assert.equal(r.trusted('victim'), true, 'the stale reports were pruned');
    assert.equal(r.reportedBy('other'), 2);
    assert.deepEqual(r.reported(), { other: 2 });
  });

  it('is not fooled by replays: an old report neither replaces a newer one nor counts as fresh', () => {
    const clock = new FakeClock();
    const r = new Reputation(clock, { self: 'me', hearsayTtlMs: 30_000 });
    const [then, later] = [clock.now(), clock.now() + 1000];
    r.heard('a', ['victim'], then);
    r.heard('b', ['victim'], then);
    clock.advance(2000);
    r.heard('a', [], later);
    r.heard('b', [], later);
    assert.equal(r.trusted('victim'), true, 'withdrawn');
    // Their old signed reports, published again by someone (still within the events' 5 minutes).
    r.heard('a', ['victim'], then);
    r.heard('b', ['victim'], then);
    assert.equal(r.trusted('victim'), true, 'a replay changes nothing');
    // A first report from a reporter, but said long ago: not fresh.
    r.heard('c', ['victim'], clock.now() - 60_000);
    r.heard('d', ['victim'], clock.now() - 60_000);
    assert.equal(r.trusted('victim'), true, 'old words are old');
  });
});
