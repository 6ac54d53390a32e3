import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ControlEvent, encodeEvent } from '@edgemesh/contracts';
import { createTestCa, testCredentials } from '../../harness/test-ca.ts';
import { EventSigner } from './event-signer.ts';
import { Revocations } from './revocations.ts';

const announce = (from: string, nodeId = from, sentAtMs = Date.now()): ControlEvent => ({
  v: 1,
  type: 'member.announce',
  mesh: 'm',
  from,
  sentAtMs,
  body: { member: { nodeId, zone: 'z', region: 'r', grpc: '10.0.0.1:7481', weight: 1, incarnation: 1 } },
});

describe('control-plane event signatures', () => {
  it('accepts an event its sender signed, and refuses every other, saying why', async () => {
    const revocations = new Revocations();
    const foreignCa = await createTestCa('default');
    const [a, b, stranger] = await Promise.all([
      testCredentials('node-a'),
      testCredentials('node-b'),
      testCredentials('node-a', { ca: foreignCa }),
    ]);
    const checker = new EventSigner(b, { revocations });
    const check = (event: ControlEvent, by: EventSigner | undefined, tamper = false) => {
      const data = encodeEvent(event);
      const headers = by?.sign(data) ?? {};
      const seen = tamper ? encodeEvent({ ...event, sentAtMs: event.sentAtMs + 1 }) : data;
      return checker.check(seen, (name) => headers[name], event);
    };
    const byA = new EventSigner(a);
    assert.equal(check(announce('node-a'), byA), undefined);
    assert.equal(check(announce('node-a'), undefined), 'unsigned');
    assert.equal(check(announce('node-a'), new EventSigner(stranger)), 'unknown-sender');
    assert.equal(check(announce('node-a'), byA, true), 'bad-signature');
    assert.equal(check(announce('node-c'), byA), 'sender-mismatch');
    assert.equal(check(announce('node-a', 'node-c'), byA), 'sender-mismatch');
    assert.equal(check(announce('node-a', 'node-a', Date.now() + 3600_000), byA), 'future');
    assert.equal(check(announce('node-a', 'node-a', Date.now() - 3600_000), byA), 'stale');
    revocations.replace(['node-a']);
    assert.equal(check(announce('node-a'), byA), 'revoked');
    for (const c of [a, b, stranger]) c.close();
  });
});
