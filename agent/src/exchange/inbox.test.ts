import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type ExchangeMessage,
  Inbox,
  MAX_QUEUED,
  MAX_QUEUED_TOPICS,
  MAX_TOTAL_QUEUED_BYTES,
} from './inbox.ts';

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

describe('Inbox bounds over all topics', () => {
  it('keeps at most MAX_TOTAL_QUEUED_BYTES and MAX_QUEUED_TOPICS for no receiver, dropping the oldest queues first', () => {
    const inbox = new Inbox();
    const mib = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < 200; i++)
      inbox.deliver({ topic: `t${i}`, from: 'n', receivedAtMs: i, contentType: 'x', body: mib });
    assert.ok(inbox.queuedBytes <= MAX_TOTAL_QUEUED_BYTES, `${inbox.queuedBytes} bytes queued`);
    assert.equal(inbox.dropped, 200 - MAX_TOTAL_QUEUED_BYTES / mib.length);
    const got: string[] = [];
    inbox.subscribe('t199', (m) => got.push(m.topic));
    assert.deepEqual(got, ['t199'], 'the newest kept');
    for (let i = 0; i < MAX_QUEUED_TOPICS + 10; i++)
      inbox.deliver({
        topic: `small${i}`,
        from: 'n',
        receivedAtMs: i,
        contentType: 'x',
        body: Buffer.from('x'),
      });
    const gone: string[] = [];
    inbox.subscribe('small0', (m) => gone.push(m.topic));
    assert.deepEqual(gone, [], 'the oldest topics went first');
  });
});
