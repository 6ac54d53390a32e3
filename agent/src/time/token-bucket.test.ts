import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TokenBucket } from './token-bucket.ts';

describe('TokenBucket', () => {
  it('lets a burst of one second through, then `rate` a second, and never saves more than a burst', () => {
    const bucket = new TokenBucket(4, 0);
    const taken = (now: number, n: number) =>
      Array.from({ length: n }, () => bucket.take(now)).filter(Boolean).length;
    assert.equal(taken(0, 10), 4, 'the burst');
    assert.equal(taken(100, 10), 0, 'a tenth of a second: less than a token');
    assert.equal(taken(250, 10), 1, 'a quarter: one');
    assert.equal(taken(10_250, 10), 4, 'ten quiet seconds save one burst, not forty tokens');
  });

  it('takes a clock set back as no time, not as a debt', () => {
    const bucket = new TokenBucket(1, 3_600_000);
    assert.equal(bucket.take(3_600_000), true);
    assert.equal(bucket.take(0), false, 'an hour back: nothing refilled');
    // Counted as a debt, an hour back locked the caller out for an hour.
    assert.equal(bucket.take(1000), true, 'a second after the step: a token');
  });
});
