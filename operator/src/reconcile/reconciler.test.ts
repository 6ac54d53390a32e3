import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { type EdgeMesh, edgeMeshSpecSchema } from '../api/edgemesh.ts';
import { KubeApiError } from '../kit/kube-http.ts';
import type { KubeObject } from './desired.ts';
import { reconcile, type ReconcileDeps } from './reconciler.ts';

const node = { metadata: { name: 'edge-0', labels: {} } };

/** A mesh in namespace `edge`, whose Secrets the API server refuses to the operator (no Role there). */
function refusingSecrets(spec: Record<string, unknown> = {}) {
  const mesh = {
    apiVersion: 'edgemesh.p2p.dev/v1alpha1',
    kind: 'EdgeMesh',
    metadata: { namespace: 'edge', name: 'cdn', uid: 'u', generation: 1 },
    spec: edgeMeshSpecSchema.parse({ controlPlane: { natsUrl: 'nats://nats:4222' }, ...spec }),
  } as EdgeMesh;
  const refused = () =>
    Promise.reject(
      new KubeApiError(403, { message: 'secrets is forbidden' }, 'GET /api/v1/namespaces/edge/secrets/x'),
    );
  const applied: KubeObject[] = [];
  const statuses: EdgeMesh['status'][] = [];
  const deps: ReconcileDeps = {
    mesh: () => mesh,
    daemonSet: () => undefined,
    nodes: () => [node],
    secretLabels: refused,
    meshTrust: refused,
    meshNatsCredentials: refused,
    apply: (o) => (applied.push(o), Promise.resolve(o)),
    remove: () => Promise.resolve(),
    writeStatus: (_, s) => (statuses.push(s), Promise.resolve()),
    event: () => Promise.resolve(),
    agentImage: { image: 'edgemesh:1' },
    logger: pino({ level: 'silent' }),
  };
  return { deps, applied, statuses };
}

describe('a mesh in a namespace whose Secrets the operator may not touch', () => {
  for (const [what, spec] of [
    ['its CA and NATS user', {}],
    ['a Secret its spec names', { controlPlane: { natsUrl: 'nats://n:4222', credentialsSecret: 'creds' } }],
  ] as const)
    it(`is Degraded (NamespaceNotGranted), saying what to do, and left alone: ${what}`, async () => {
      const { deps, applied, statuses } = refusingSecrets(spec);
      const outcome = await reconcile('edge/cdn', deps);
      assert.deepEqual(applied, [], 'nothing applied');
      const degraded = statuses.at(-1)?.conditions?.find((c) => c.type === 'Degraded');
      assert.equal(degraded?.status, 'True');
      assert.equal(degraded?.reason, 'NamespaceNotGranted');
      assert.match(degraded.message, /namespace edge .*meshNamespaces/);
      assert.ok(outcome && outcome.requeueAfterMs > 0, 'looked at again (a grant may come)');
    });

  it('still fails on other errors, to be retried', async () => {
    const { deps } = refusingSecrets();
    deps.meshNatsCredentials = () => Promise.reject(new KubeApiError(500, {}, 'GET x'));
    await assert.rejects(reconcile('edge/cdn', deps), /500/);
  });
});

describe('a mesh whose cache sizes are past the CRD’s bounds (stored before it had them)', () => {
  function clampedMesh(cache: Record<string, unknown>) {
    const mesh = {
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { namespace: 'edge', name: 'cdn', uid: 'u', generation: 1 },
      spec: edgeMeshSpecSchema.parse({
        controlPlane: { natsUrl: 'nats://nats:4222' },
        security: { mtls: false },
        cache,
      }),
    } as EdgeMesh;
    const events: { type: string; reason: string; note: string }[] = [];
    const applied: KubeObject[] = [];
    const deps: ReconcileDeps = {
      mesh: () => mesh,
      daemonSet: () => undefined,
      nodes: () => [node],
      secretLabels: () => Promise.resolve(undefined),
      apply: (o) => (applied.push(o), Promise.resolve(o)),
      remove: () => Promise.resolve(),
      writeStatus: (_, s) => ((mesh.status = s), Promise.resolve()),
      event: (_, type, reason, note) => (events.push({ type, reason, note }), Promise.resolve()),
      agentImage: { image: 'edgemesh:1' },
      logger: pino({ level: 'silent' }),
    };
    return { mesh, deps, events, applied };
  }

  it('is managed with the sizes clamped, and a Warning says so once per change of the spec', async () => {
    const { mesh, deps, events, applied } = clampedMesh({ diskSize: '8Ei', memory: '2Ti' });
    await reconcile('edge/cdn', deps);
    assert.ok(
      applied.some((o) => o.kind === 'DaemonSet'),
      'the mesh is still managed',
    );
    const clamped = events.filter((e) => e.reason === 'CacheSizeClamped');
    assert.equal(clamped.length, 1);
    assert.equal(clamped[0]!.type, 'Warning');
    assert.match(clamped[0]!.note, /cache\.diskSize 8Ei .*they get 1Pi; cache\.memory 2Ti .*they get 1Ti/);
    assert.match(clamped[0]!.note, /from 64Mi to 1Pi/);
    // Resyncs of the same generation say nothing more.
    await reconcile('edge/cdn', deps);
    await reconcile('edge/cdn', deps);
    assert.equal(events.filter((e) => e.reason === 'CacheSizeClamped').length, 1);
    // A change to another field: said again (the size is still clamped).
    mesh.metadata.generation = 2;
    await reconcile('edge/cdn', deps);
    assert.equal(events.filter((e) => e.reason === 'CacheSizeClamped').length, 2);
  });

  it('says nothing for sizes within the bounds', async () => {
    const { deps, events } = clampedMesh({ diskSize: '1Pi', memory: '1Ti' });
    await reconcile('edge/cdn', deps);
    assert.deepEqual(
      events.filter((e) => e.reason === 'CacheSizeClamped'),
      [],
    );
  });
});
