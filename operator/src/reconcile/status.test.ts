import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sameStatus } from './reconciler.ts';
import { computeStatus, mergePatchFrom } from './status.ts';
import { edgeMeshSpecSchema, type EdgeMesh, type EdgeMeshStatus } from '../api/edgemesh.ts';
import type { ControlPlanePresence } from '../figures.ts';

describe('status writes', () => {
  it('compares statuses by value, whatever the order of their keys (a real server sorts them)', () => {
    const written = {
      observedGeneration: 2,
      zones: { b: 1, a: 2 },
      conditions: [{ type: 'Ready', status: 'True' }],
    };
    const read = {
      conditions: [{ status: 'True', type: 'Ready' }],
      observedGeneration: 2,
      zones: { a: 2, b: 1 },
    };
    assert.ok(sameStatus(written as never, read as never));
    assert.ok(!sameStatus(written as never, { ...read, zones: { a: 2 } } as never));
    assert.ok(!sameStatus(written as never, undefined));
  });

  it('patches away what the new status drops, which a merge patch would otherwise keep', () => {
    const previous = { zones: { a: 1, gone: 2 }, hitRatio: '0.5', readyAgents: 3 };
    const next = { zones: { a: 1 }, readyAgents: 2 };
    assert.deepEqual(mergePatchFrom(previous, next), {
      zones: { a: 1, gone: null },
      hitRatio: null,
      readyAgents: 2,
    });
    assert.deepEqual(mergePatchFrom({}, next), next);
    assert.deepEqual(
      mergePatchFrom({ list: [1, 2] }, { list: [1] }),
      { list: [1] },
      'arrays are replaced whole',
    );
  });
});

describe('Ready', () => {
  const mesh = {
    apiVersion: 'edgemesh.p2p.dev/v1alpha1',
    kind: 'EdgeMesh',
    metadata: { namespace: 'shop', name: 'cdn', generation: 1 },
    spec: edgeMeshSpecSchema.parse({ controlPlane: { natsUrl: 'nats://nats:4222' } }),
  } as EdgeMesh;
  const nodes = new Map(['a', 'b'].map((n) => [n, { zone: 'z', region: 'r', weight: 1 }]));
  const rolledOut = {
    metadata: { generation: 1 },
    status: {
      observedGeneration: 1,
      desiredNumberScheduled: 2,
      numberReady: 2,
      updatedNumberScheduled: 2,
      currentNumberScheduled: 2,
      numberMisscheduled: 0,
    },
  };
  const status = (presence?: ControlPlanePresence) =>
    computeStatus({ mesh, nodes, daemonSet: rolledOut, blocker: undefined, now: new Date(0), presence });
  const condition = (s: EdgeMeshStatus, type: string) => s.conditions?.find((c) => c.type === type);

  it('is True only when the agents are rolled out and every one reports on the control plane', () => {
    const all = status({ connection: 'up', reporting: 2, changesInMs: 1000 });
    assert.equal(condition(all, 'Ready')?.status, 'True');
    assert.equal(condition(all, 'ControlPlaneConnected')?.reason, 'AgentsReporting');
    assert.equal(all.reportingAgents, 2);

    const one = status({ connection: 'up', reporting: 1, changesInMs: 1000 });
    assert.equal(condition(one, 'Ready')?.status, 'False');
    assert.equal(condition(one, 'Ready')?.reason, 'AgentsNotReporting');
    assert.match(condition(one, 'ControlPlaneConnected')!.message, /1 of 2 agents/);
    assert.equal(one.reportingAgents, 1);
  });

  it('says when the operator itself cannot reach NATS, and Unknown when reports are not followed', () => {
    const failed = status({ connection: 'failed', reporting: 0 });
    assert.equal(condition(failed, 'ControlPlaneConnected')?.status, 'False');
    assert.equal(condition(failed, 'Ready')?.reason, 'OperatorCannotConnect');
    assert.match(condition(failed, 'Ready')!.message, /nats:\/\/nats:4222/);
    assert.equal(condition(status(), 'ControlPlaneConnected')?.status, 'Unknown');
    assert.equal(condition(status(), 'Ready')?.status, 'False');
  });

  it('is False with reason NoMatchingNodes when the DaemonSet schedules no agent, and nothing is left in progress', () => {
    const none = {
      metadata: { generation: 1 },
      status: { ...rolledOut.status, desiredNumberScheduled: 0, numberReady: 0, updatedNumberScheduled: 0 },
    };
    const s = computeStatus({
      mesh,
      nodes,
      daemonSet: none,
      blocker: undefined,
      now: new Date(0),
      presence: { connection: 'up', reporting: 0 },
    });
    assert.equal(condition(s, 'Ready')?.status, 'False');
    assert.equal(condition(s, 'Ready')?.reason, 'NoMatchingNodes');
    assert.match(condition(s, 'Ready')!.message, /2 node\(s\) match .*nothing serves/);
    assert.equal(condition(s, 'Progressing')?.status, 'False', 'not a rollout that never ends');
    assert.equal(condition(s, 'Degraded')?.status, 'False', 'the spec can be carried out');
    assert.equal(s.desiredAgents, 0);
  });

  const reporting = { connection: 'up', reporting: 2, changesInMs: 1000 } as const;

  it('is False while a rollout is under way, though every agent is ready', () => {
    const rolling = { ...rolledOut, status: { ...rolledOut.status, updatedNumberScheduled: 1 } };
    const s = computeStatus({
      mesh,
      nodes,
      daemonSet: rolling,
      blocker: undefined,
      now: new Date(0),
      presence: reporting,
    });
    assert.equal(condition(s, 'Ready')?.status, 'False', 'Ready with one agent of two on the old spec');
    assert.equal(condition(s, 'Ready')?.reason, 'AgentsNotReady');
    assert.equal(condition(s, 'Progressing')?.status, 'True');
    assert.match(condition(s, 'Progressing')!.message, /1 of 2 agents updated, 2 ready/);
  });

  it('is False while the DaemonSet controller has not yet seen its latest spec (a stale status)', () => {
    // The spec changed (generation 2); the status still describes generation 1's rollout.
    const stale = { metadata: { generation: 2 }, status: rolledOut.status };
    const s = computeStatus({
      mesh,
      nodes,
      daemonSet: stale,
      blocker: undefined,
      now: new Date(0),
      presence: reporting,
    });
    assert.equal(condition(s, 'Ready')?.status, 'False', 'Ready on a status for the previous spec');
    assert.equal(condition(s, 'Progressing')?.status, 'True');
  });

  it('is False while Degraded, however well the agents do', () => {
    const blocker = { reason: 'IssuerNotFound', message: 'the issuer is missing' };
    const s = computeStatus({
      mesh,
      nodes,
      daemonSet: rolledOut,
      blocker,
      now: new Date(0),
      presence: reporting,
    });
    assert.equal(condition(s, 'Degraded')?.status, 'True');
    assert.equal(condition(s, 'Ready')?.status, 'False', 'Ready and Degraded at once');
    assert.equal(condition(s, 'Ready')?.reason, 'IssuerNotFound');
  });

  it('moves lastTransitionTime when, and only when, a condition changes status', () => {
    const at = (iso: string, previous: EdgeMeshStatus | undefined, presence: ControlPlanePresence) =>
      computeStatus({
        mesh: { ...mesh, ...(previous ? { status: previous } : {}) },
        nodes,
        daemonSet: rolledOut,
        blocker: undefined,
        now: new Date(iso),
        presence,
      });
    const first = at('2025-01-01T00:00:00Z', undefined, reporting);
    assert.equal(condition(first, 'Ready')?.status, 'True');
    assert.equal(condition(first, 'Ready')?.lastTransitionTime, '2025-01-01T00:00:00Z');
    // A minute later nothing changed: the times stay.
    const same = at('2025-01-01T00:01:00Z', first, reporting);
    for (const type of ['Ready', 'Degraded', 'Progressing', 'ControlPlaneConnected'])
      assert.equal(
        condition(same, type)?.lastTransitionTime,
        '2025-01-01T00:00:00Z',
        `${type} moved, though its status did not change`,
      );
    // Then an agent stops reporting: Ready (and ControlPlaneConnected) change, and only they move.
    const changed = at('2025-01-01T00:02:00.250Z', same, { ...reporting, reporting: 1 });
    assert.equal(condition(changed, 'Ready')?.status, 'False');
    assert.equal(condition(changed, 'Ready')?.lastTransitionTime, '2025-01-01T00:02:00Z');
    assert.equal(condition(changed, 'ControlPlaneConnected')?.lastTransitionTime, '2025-01-01T00:02:00Z');
    assert.equal(condition(changed, 'Degraded')?.lastTransitionTime, '2025-01-01T00:00:00Z');
  });
});
