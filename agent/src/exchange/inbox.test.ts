import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ExchangeMessage, Inbox, MAX_QUEUED } from './inbox.ts';

const message = (topic: string, n: number): ExchangeMessage => ({
  topic,
  from: 'a',
  receivedAtMs: n,
  contentType: 'text/plain',
  body: Buffer.from(String(n)),
});

describe('Inbox', () => {
  it('queues while nobody listens, hands the queue to the next consumer, then streams', () => {
    const inbox = new Inbox();
    inbox.deliver(message('t', 1));
    inbox.deliver(message('t', 2));
    inbox.deliver(message('other', 9));
    const got: number[] = [];
    const stop = inbox.subscribe('t', (m) => got.push(m.receivedAtMs));
    inbox.deliver(message('t', 3));
    assert.deepEqual(got, [1, 2, 3]);
    stop();
    inbox.deliver(message('t', 4));
    const later: number[] = [];
    inbox.subscribe('t', (m) => later.push(m.receivedAtMs));
    assert.deepEqual(later, [4], 'delivered once: the first consumer does not get it again');
  });

  it('gives every live consumer each message, and bounds the queue', () => {
    const inbox = new Inbox();
    const a: number[] = [];
    const b: number[] = [];
    inbox.subscribe('t', (m) => a.push(m.receivedAtMs));
    inbox.subscribe('t', (m) => b.push(m.receivedAtMs));
    inbox.deliver(message('t', 1));
    assert.deepEqual([a, b], [[1], [1]]);
    for (let i = 0; i < MAX_QUEUED + 5; i++) inbox.deliver(message('q', i));
    assert.equal(inbox.dropped, 5);
    const got: number[] = [];
    inbox.subscribe('q', (m) => got.push(m.receivedAtMs));
    assert.equal(got[0], 5, 'the oldest went first');
    assert.equal(got.length, MAX_QUEUED);
  });
});
