import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TerminalError, WorkQueue } from './queue.ts';

describe('WorkQueue', () => {
  it('queues a key once however often it is added, in order', async () => {
    const q = new WorkQueue();
    for (const k of ['a', 'b', 'a', 'c', 'b']) q.add(k);
    assert.equal(q.depth, 3);
    assert.deepEqual([await q.next(), await q.next(), await q.next()], ['a', 'b', 'c']);
  });

  it('processes a key added while it is being processed once more, after', async () => {
    const q = new WorkQueue();
    q.add('a');
    const key = await q.next();
    q.add('a');
    assert.equal(q.depth, 0, 'not ready while processing');
    q.done(key!, undefined);
    assert.equal(q.depth, 1);
  });

  it('retries a failing key after a backoff that doubles, and forgets its failures on success', async () => {
    const q = new WorkQueue({ baseDelayMs: 20, maxDelayMs: 1000 });
    const waits: number[] = [];
    q.add('k');
    for (let i = 0; i < 3; i++) {
      await q.next();
      q.done('k', new Error('boom'));
      assert.equal(q.depth, 0, 'not retried at once');
      const started = performance.now();
      await q.next();
      waits.push(performance.now() - started);
      q.done('k', new Error('boom'));
      q.add('k'); // the retry timer is pending; add() makes it ready now
    }
    assert.ok(
      waits.every((w) => w >= 15),
      `each retry waited: ${waits.map(Math.round).join(' ')} ms`,
    );
    assert.equal(q.failures('k'), 6);
    await q.next();
    q.done('k', undefined);
    assert.equal(q.failures('k'), 0);
    q.shutDown();
  });

  it('does not retry a terminal error, and revisits after requeueAfter', async () => {
    const q = new WorkQueue();
    q.add('t');
    await q.next();
    q.done('t', new TerminalError('bad spec'));
    assert.equal(q.waiting, 0);
    q.add('r');
    await q.next();
    q.done('r', { requeueAfterMs: 20 });
    assert.equal(q.waiting, 1);
    assert.equal(await q.next(), 'r');
    q.shutDown();
  });

  it('runs workers until shut down, never two on one key', async () => {
    const q = new WorkQueue();
    const active = new Set<string>();
    let overlap = false;
    let processed = 0;
    const run = q.run(4, async (key) => {
      if (active.has(key)) overlap = true;
      active.add(key);
      await new Promise((r) => setTimeout(r, 2)); // each item takes a while, so workers overlap
      active.delete(key);
      processed++;
    });
    for (let i = 0; i < 50; i++) q.add(`k${i % 5}`);
    // Until the work is done: every key processed, nothing queued or in progress.
    while (processed < 5 || q.depth > 0 || q.busy > 0) await new Promise((r) => setTimeout(r, 5));
    q.shutDown();
    await run;
    assert.equal(overlap, false);
    assert.ok(processed >= 5);
  });
});
