import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { stubTransport } from '../transport/stub-transport.ts';
import type { Member } from './membership.ts';
import { messageTargets } from './overlay.ts';

const member = (nodeId: string, zone: string, state: Member['state']): Member => ({
  info: { nodeId, zone, region: 'r', grpc: `${nodeId}:7481`, weight: 1, incarnation: 0 },
  transport: stubTransport(nodeId, `${nodeId}:7481`),
  state,
  since: 0,
});

describe('messageTargets', () => {
  const members = [
    member('a', 'z1', 'alive'),
    member('b', 'z1', 'suspect'),
    member('c', 'z1', 'dead'),
    member('d', 'z1', 'unconfirmed'),
  ];
  const ids = (target: string) => messageTargets(members, target).map((m) => m.info.nodeId);

  it('tries a node named on its own while it is suspect (late is not gone), never a dead or unproven one', () => {
    assert.deepEqual(ids('a'), ['a']);
    assert.deepEqual(ids('b'), ['b']);
    assert.deepEqual(ids('c'), []);
    assert.deepEqual(ids('d'), []);
  });

  it('sends to a group only the alive it names (one suspect that is gone would hold up the whole delivery)', () => {
    assert.deepEqual(ids('zone:z1'), ['a']);
    assert.deepEqual(ids('region:r'), ['a']);
    assert.deepEqual(ids('all'), ['a']);
    assert.deepEqual(ids('zone:z2'), []);
  });
});
