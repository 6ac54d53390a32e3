import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CallerBusyError, CallerSlots } from './caller-slots.ts';

const deferred = () => {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
};

describe('CallerSlots', () => {
  it('runs perCaller calls of a caller at once, queues queuePerCaller more, refuses the rest', async () => {
    const slots = new CallerSlots(2, 1);
    const gates = [deferred(), deferred(), deferred()];
    const started: number[] = [];
    const calls = gates.map((gate, i) =>
      slots.run('m', async () => {
        started.push(i);
        await gate.promise;
        return i;
      }),
    );
    await Promise.resolve();
    assert.deepEqual(started, [0, 1], 'two run, the third waits');
    assert.deepEqual(slots.of('m'), { running: 2, waiting: 1 });
    await assert.rejects(
      slots.run('m', () => Promise.resolve(9)),
      CallerBusyError,
    );
    // Another caller is not held up by this one.
    assert.equal(await slots.run('other', () => Promise.resolve(7)), 7);
    gates[0]!.resolve();
    assert.equal(await calls[0], 0);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(started, [0, 1, 2], 'the waiting one took the freed slot');
    gates[1]!.resolve();
    gates[2]!.resolve();
    assert.deepEqual(await Promise.all(calls), [0, 1, 2]);
    assert.deepEqual(
      slots.of('m'),
      { running: 0, waiting: 0 },
      'nothing kept for a caller with nothing running',
    );
  });

  it('takes a call cancelled while it waits out of the queue at once, and frees the slot after a failure', async () => {
    const slots = new CallerSlots(1, 1);
    const gate = deferred();
    const first = slots.run('m', () => gate.promise);
    let ran = false;
    const leaving = new AbortController();
    const second = slots.run('m', () => ((ran = true), Promise.resolve()), leaving.signal);
    assert.deepEqual(slots.of('m'), { running: 1, waiting: 1 });
    leaving.abort();
    assert.equal(await second, undefined);
    assert.deepEqual(slots.of('m'), { running: 1, waiting: 0 }, 'its place is free at once');
    const third = slots.run('m', () => Promise.resolve(3)); // would be refused were the place still held
    gate.resolve();
    await first;
    assert.equal(await third, 3);
    assert.equal(ran, false);
    await assert.rejects(
      slots.run('m', () => Promise.reject(new Error('copy failed'))),
      /copy failed/,
    );
    assert.deepEqual(slots.of('m'), { running: 0, waiting: 0 });
  });
});
