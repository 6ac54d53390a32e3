import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UploadLimiter } from './upload-limiter.ts';

describe('UploadLimiter', () => {
  it('does not limit at rate 0', async () => {
    const limiter = new UploadLimiter(0, 100);
    assert.equal(limiter.limited, false);
    await limiter.acquire(10 ** 9, 'a');
  });

  it('grants a burst at once, then paces at the rate', async () => {
    let now = 0;
    const limiter = new UploadLimiter(1000, 100, () => now); // 1000 B/s: 1 byte per ms
    const granted: number[] = [];
    const grants = [0, 1, 2].map((i) => limiter.acquire(100, 'a')!.then(() => granted.push(i)));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(granted, [0, 1], 'the burst (100 B) lets a second request through at once');
    now = 100;
    await grants[2]; // granted when the limiter's own timer fires, now that the clock has moved on
    assert.deepEqual(granted, [0, 1, 2]);
    limiter.close();
  });

  it('serves waiting groups round-robin: a late group is not locked out by a crowd (starvation guard)', async () => {
    let now = 0;
    const limiter = new UploadLimiter(1000, 10, () => now);
    const order: string[] = [];
    for (let i = 0; i < 5; i++) void limiter.acquire(10, 'near')!.then(() => order.push(`near${i}`));
    void limiter.acquire(10, 'far')!.then(() => order.push('far'));
    for (let t = 1; t <= 10; t++) {
      now = t * 10;
      // One step of the fake clock: long enough for the limiter's own timer (10 ms at this rate) to fire.
      await new Promise((r) => setTimeout(r, 12));
    }
    assert.equal(order.length, 6);
    assert.ok(order.indexOf('far') < order.indexOf('near3'), `far took its turn: ${order.join(' ')}`);
    limiter.close();
  });

  it('refuses at once when a group already has maxWaiting requests waiting', () => {
    const limiter = new UploadLimiter(1, 1, () => 0);
    assert.ok(limiter.acquire(10, 'a', 2)); // granted
    assert.ok(limiter.acquire(10, 'a', 2)); // waits
    assert.ok(limiter.acquire(10, 'a', 2)); // waits
    assert.equal(limiter.acquire(10, 'a', 2), undefined, 'busy');
    assert.ok(limiter.acquire(10, 'b', 2), 'another group still gets in line');
    assert.deepEqual(limiter.waiting(), { a: 2, b: 1 });
    limiter.close();
  });

  it('after a quiet spell grants the configured burst at once, no more (as a fresh limiter does)', async () => {
    /** Bytes granted at once, in 1-byte requests, by `limiter` at the clock's present time. */
    const atOnce = async (limiter: UploadLimiter) => {
      let granted = 0;
      for (let i = 0; i < 1000; i++) void limiter.acquire(1, 'a')!.then(() => granted++);
      await new Promise((r) => setImmediate(r));
      limiter.close();
      return granted;
    };
    let now = 0;
    const fresh = await atOnce(new UploadLimiter(1000, 100, () => now)); // 1 byte per ms, 100 B burst
    const limiter = new UploadLimiter(1000, 100, () => now);
    await limiter.acquire(50, 'a');
    now = 10_000; // 10 s of quiet
    const afterQuiet = await atOnce(limiter);
    // The burst, plus the one request that goes at the line rate.
    assert.ok(afterQuiet <= 100 + 1, `${afterQuiet} B at once after a quiet spell, for a 100 B burst`);
    assert.ok(afterQuiet >= 100, `only ${afterQuiet} B at once: the burst was not granted`);
    assert.equal(afterQuiet, fresh, 'a quiet spell gives the burst a fresh limiter gives');
  });
});
