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
      [bytes('{"v":2}'), 'invalid'],
      [bytes(JSON.stringify({ ...announce, type: 'member.explode' })), 'invalid'],
      [bytes(JSON.stringify({ ...announce, extra: true })), 'invalid'],
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

  it('namespaces subjects per mesh and refuses unsafe mesh names', () => {
    assert.equal(subjects('prod').all, 'edgemesh.prod.>');
    assert.equal(subjectFor('prod', 'member.announce'), 'edgemesh.prod.members');
    for (const bad of ['', 'a.b', 'a b', '*', '>', 'x'.repeat(64)]) assert.throws(() => subjects(bad), bad);
  });
});
