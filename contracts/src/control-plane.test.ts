import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type ControlEvent,
  decodeEvent,
  encodeEvent,
  MAX_EVENT_BYTES,
  subjectFor,
  subjects,
} from './control-plane.ts';

const member = {
  nodeId: 'edge-1',
  zone: 'eu-a',
  region: 'eu',
  grpc: '10.0.0.1:7481',
  weight: 1,
  incarnation: 0,
};
const announce: ControlEvent = {
  v: 1,
  type: 'member.announce',
  mesh: 'prod',
  from: 'edge-1',
  sentAtMs: 1,
  body: { member },
};

describe('control-plane contract', () => {
  it('round-trips every event type', () => {
    const events: ControlEvent[] = [
      announce,
      {
        v: 1,
        type: 'member.leave',
        mesh: 'prod',
        from: 'edge-1',
        sentAtMs: 2,
        body: { nodeId: 'edge-1', incarnation: 0 },
      },
      {
        v: 1,
        type: 'member.suspect',
        mesh: 'prod',
        from: 'edge-2',
        sentAtMs: 3,
        body: { nodeId: 'edge-1', incarnation: 0 },
      },
      {
        v: 1,
        type: 'members.snapshot',
        mesh: 'prod',
        from: 'operator',
        sentAtMs: 4,
        body: { members: [member] },
      },
    ];
    for (const event of events)
      assert.deepEqual(decodeEvent('prod', encodeEvent(event)), { ok: true, event });
  });

  it('drops garbage, forged shapes and other meshes with a reason, never throwing', () => {
    const bytes = (s: string) => Buffer.from(s);
    const cases: [Uint8Array, string][] = [
      [bytes('not json at all'), 'not-json'],
      [bytes('{"v":2}'), 'unsupported-version'],
      [bytes('{"v":"1"}'), 'invalid'],
      [bytes(JSON.stringify({ ...announce, v: 1.5 })), 'invalid'],
      [bytes(JSON.stringify({ ...announce, minor: -1 })), 'invalid'],
      [bytes(JSON.stringify({ ...announce, type: 'member.explode' })), 'unknown-type'],
      [
        bytes(JSON.stringify({ ...announce, body: { member: { ...member, nodeId: 'x'.repeat(254) } } })),
        'invalid',
      ],
      [bytes(JSON.stringify({ ...announce, body: { member: { ...member, grpc: 'no-port' } } })), 'invalid'],
      [
        bytes(JSON.stringify({ ...announce, body: { member: { ...member, weight: Number.MAX_VALUE } } })),
        'invalid',
      ],
      [
        bytes(
          JSON.stringify({ ...announce, body: { member: { ...member, __proto__: { x: 1 }, nodeId: '' } } }),
        ),
        'invalid',
      ],
      [bytes(JSON.stringify({ ...announce, mesh: 'other' })), 'wrong-mesh'],
      [Buffer.alloc(MAX_EVENT_BYTES + 1, 0x20), 'too-large'],
      [new Uint8Array([0xff, 0xfe, 0x00]), 'not-json'],
    ];
    for (const [data, reason] of cases)
      assert.deepEqual(decodeEvent('prod', data), { ok: false, reason }, String(data).slice(0, 60));
  });

  it('takes an event of a newer minor with fields it does not know, and strips them', () => {
    const newer = {
      ...announce,
      minor: 7,
      hint: 'a field of 1.7',
      body: { member: { ...member, battery: 0.4 }, also: [1, 2] },
    };
    assert.deepEqual(decodeEvent('prod', Buffer.from(JSON.stringify(newer))), {
      ok: true,
      event: { ...announce, minor: 7 },
    });
    // A type the newer minor added is dropped as unknown, not as invalid.
    const added = { ...newer, type: 'member.battery', body: {} };
    assert.deepEqual(decodeEvent('prod', Buffer.from(JSON.stringify(added))), {
      ok: false,
      reason: 'unknown-type',
    });
  });

  it('drops events of a major it does not speak, or older than its min, as unsupported-version', () => {
    const at = (v: number, minor?: number) =>
      Buffer.from(JSON.stringify({ ...announce, v, ...(minor === undefined ? {} : { minor }) }));
    const speaks11to20 = { min: { major: 1, minor: 1 }, max: { major: 2, minor: 0 } };
    assert.deepEqual(decodeEvent('prod', at(2)), { ok: false, reason: 'unsupported-version' });
    assert.deepEqual(decodeEvent('prod', at(1), speaks11to20), { ok: false, reason: 'unsupported-version' });
    assert.equal(decodeEvent('prod', at(1, 1), speaks11to20).ok, true);
    assert.equal(decodeEvent('prod', at(2, 5), speaks11to20).ok, true);
    assert.deepEqual(decodeEvent('prod', at(3), speaks11to20), { ok: false, reason: 'unsupported-version' });
  });

  it('sends a 1.0 event exactly as builds before protocol versions did (no minor field)', () => {
    assert.equal(Buffer.from(encodeEvent(announce)).toString(), JSON.stringify(announce));
  });

  it('namespaces subjects per mesh and refuses unsafe mesh names', () => {
    assert.equal(subjects('prod').all, 'edgemesh.prod.>');
    assert.equal(subjectFor('prod', 'member.announce'), 'edgemesh.prod.members');
    for (const bad of ['', 'a.b', 'a b', '*', '>', 'x'.repeat(64)]) assert.throws(() => subjects(bad), bad);
  });
});
