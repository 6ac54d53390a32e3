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

  it('lets good service build a little credit, never enough to hide a lie', () => {
    const r = new Reputation(new FakeClock());
    for (let i = 0; i < 100; i++) r.record('p', 'good');
    assert.equal(r.score('p'), 5);
    for (let i = 0; i < 4; i++) r.record('p', 'bad-manifest');
    assert.equal(r.trusted('p'), false);
    assert.deepEqual(r.snapshot(), { p: -19 });
  });
});
