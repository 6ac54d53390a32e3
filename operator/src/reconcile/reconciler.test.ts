import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1DaemonSet } from '@kubernetes/client-node';
import { pino } from 'pino';
import { type EdgeMesh, edgeMeshSpecSchema } from '../api/edgemesh.ts';
import { SecretConflictError } from '../identity/ca-store.ts';
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

/** The same mesh where the operator may touch Secrets: none it names is missing, its NATS user is made. */
function grantedSecrets(spec: Record<string, unknown> = {}) {
  const made = refusingSecrets(spec);
  made.deps.secretLabels = () => Promise.resolve(undefined);
  made.deps.meshNatsCredentials = () =>
    Promise.resolve({
      secretName: 'n',
      auth: { id: 'x', creds: () => Buffer.alloc(0) },
      renewInMs: 60_000,
      tls: false,
    });
  return made;
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

  it('is Degraded (SecretConflict) while its CA Secret is an earlier mesh’s, applies nothing, and is looked at again in 10 s', async () => {
    const { deps, applied, statuses } = grantedSecrets({ security: { mtls: true } });
    deps.meshTrust = () =>
      Promise.reject(new SecretConflictError('Secret edge/edgemesh-cdn-ca belongs to another object'));
    const outcome = await reconcile('edge/cdn', deps);
    assert.deepEqual(applied, [], 'nothing applied');
    const degraded = statuses.at(-1)?.conditions?.find((c) => c.type === 'Degraded');
    assert.equal(degraded?.reason, 'SecretConflict');
    assert.match(degraded.message, /belongs to another object/);
    assert.equal(outcome?.requeueAfterMs, 10_000);
  });
});

describe('a mesh whose cache sizes are past the CRD’s bounds (stored before it had them)', () => {
  function clampedMesh(cache: Record<string, unknown>, spec: Record<string, unknown> = {}) {
    const mesh = {
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { namespace: 'edge', name: 'cdn', uid: 'u', generation: 1 },
      spec: edgeMeshSpecSchema.parse({
        controlPlane: { natsUrl: 'nats://nats:4222' },
        security: { mtls: false },
        cache,
        ...spec,
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
      said: new Map(),
      agentImage: { image: 'edgemesh:1' },
      logger: pino({ level: 'silent' }),
    };
    const clamps = () => events.filter((e) => e.reason === 'CacheSizeClamped');
    return { mesh, deps, clamps, applied };
  }

  it('is managed with the sizes clamped, and a Warning says so once, and again when it changes', async () => {
    const { mesh, deps, clamps, applied } = clampedMesh({ diskSize: '8Ei', memory: '2Ti' });
    await reconcile('edge/cdn', deps);
    assert.ok(
      applied.some((o) => o.kind === 'DaemonSet'),
      'the mesh is still managed',
    );
    assert.equal(clamps().length, 1);
    assert.equal(clamps()[0]!.type, 'Warning');
    assert.match(clamps()[0]!.note, /cache\.diskSize 8Ei .*they get 1Pi; cache\.memory 2Ti .*they get 1Ti/);
    assert.match(clamps()[0]!.note, /from 64Mi to 1Pi/);
    // Resyncs, and a change to another field, say nothing more.
    await reconcile('edge/cdn', deps);
    mesh.metadata.generation = 2;
    mesh.spec = { ...mesh.spec, replication: { ...mesh.spec.replication, factor: 2, writeCopies: 1 } };
    await reconcile('edge/cdn', deps);
    assert.equal(clamps().length, 1);
    // What is clamped changes: said again.
    mesh.spec = { ...mesh.spec, cache: { ...mesh.spec.cache, memory: '1Ti' } };
    await reconcile('edge/cdn', deps);
    assert.equal(clamps().length, 2);
    assert.doesNotMatch(clamps()[1]!.note, /cache\.memory 2Ti/);
    // Within the bounds, then past them again: said again.
    mesh.spec = { ...mesh.spec, cache: { ...mesh.spec.cache, diskSize: '1Pi' } };
    await reconcile('edge/cdn', deps);
    mesh.spec = { ...mesh.spec, cache: { ...mesh.spec.cache, diskSize: '8Ei' } };
    await reconcile('edge/cdn', deps);
    assert.equal(clamps().length, 3);
  });

  it('is said when the operator first meets such a mesh, which has a status already (an upgrade)', async () => {
    const before = clampedMesh({ diskSize: '2Pi' });
    await reconcile('edge/cdn', before.deps);
    const { mesh, deps, clamps } = clampedMesh({ diskSize: '2Pi' });
    mesh.status = before.mesh.status; // its generation observed, as by the operator before this one
    assert.equal(mesh.status?.observedGeneration, mesh.metadata.generation);
    await reconcile('edge/cdn', deps);
    assert.equal(clamps().length, 1);
  });

  it('is said for a mesh that is blocked too (a Secret it names is missing)', async () => {
    const { deps, clamps } = clampedMesh(
      { diskSize: '8Ei' },
      { controlPlane: { natsUrl: 'nats://nats:4222', credentialsSecret: 'creds' } },
    );
    const outcome = await reconcile('edge/cdn', deps);
    assert.ok(outcome && outcome.requeueAfterMs > 0, 'blocked');
    assert.equal(clamps().length, 1);
  });

  it('compares exactly: half a byte past the maximum is clamped, the maximum written otherwise is not', async () => {
    assert.equal(clampedMesh({ diskSize: '1024Ti', memory: '1024Gi' }).clamps().length, 0);
    for (const [cache, none] of [
      [{ diskSize: '1024Ti', memory: '1024Gi' }, true],
      [{ diskSize: '1125899906842624' }, true],
      [{ diskSize: '1125899906842624.5' }, false],
      [{ memory: '1099511627776.000000001' }, false],
    ] as const) {
      const { deps, clamps } = clampedMesh(cache);
      await reconcile('edge/cdn', deps);
      assert.equal(clamps().length === 0, none, JSON.stringify(cache));
    }
  });

  it('keeps its advice in a note of bounded length, however long the stored value', async () => {
    const { deps, clamps } = clampedMesh({ diskSize: '9'.repeat(400), memory: '9'.repeat(400) });
    await reconcile('edge/cdn', deps);
    assert.ok(clamps()[0]!.note.length < 400, `${clamps()[0]!.note.length} characters`);
    assert.match(clamps()[0]!.note, /from 64Mi to 1Pi/);
  });
});

describe('children the API server refuses, and a DaemonSet the cache has not seen applied', () => {
  function meshWith(apply: ReconcileDeps['apply'], cached?: V1DaemonSet) {
    const mesh = {
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { namespace: 'edge', name: 'cdn', uid: 'u', generation: 2 },
      spec: edgeMeshSpecSchema.parse({
        controlPlane: { natsUrl: 'nats://nats:4222' },
        security: { mtls: false },
      }),
    } as EdgeMesh;
    const events: string[] = [];
    const deps: ReconcileDeps = {
      mesh: () => mesh,
      daemonSet: () => cached,
      nodes: () => [node],
      secretLabels: () => Promise.resolve(undefined),
      apply,
      remove: () => Promise.resolve(),
      writeStatus: (_, s) => ((mesh.status = s), Promise.resolve()),
      event: (_, type, reason) => (events.push(`${type} ${reason}`), Promise.resolve()),
      agentImage: { image: 'edgemesh:1' },
      logger: pino({ level: 'silent' }),
    };
    const condition = (type: string) => mesh.status?.conditions?.find((c) => c.type === type);
    return { mesh, deps, events, condition };
  }

  it('are reported: Degraded (ApplyRefused) naming the child and the server’s reason, looked at again', async () => {
    for (const code of [400, 403, 422]) {
      const { deps, events, condition } = meshWith((o) =>
        o.kind === 'Service'
          ? Promise.reject(new KubeApiError(code, { message: 'metadata.name: Invalid value' }, 'PATCH x'))
          : Promise.resolve(o),
      );
      const outcome = await reconcile('edge/cdn', deps);
      assert.equal(condition('Degraded')?.status, 'True', String(code));
      assert.equal(condition('Degraded')?.reason, 'ApplyRefused');
      assert.match(condition('Degraded')!.message, /Service edgemesh-cdn: .*Invalid value/);
      assert.ok(events.includes('Warning ApplyRefused'));
      assert.equal(outcome?.requeueAfterMs, 60_000, 'looked at again, not every 10 s');
    }
  });

  // The real API server's words (kube-apiserver 1.36, server-side apply by a ServiceAccount): with
  // no grant in the namespace, "cannot patch"; with patch granted and not create, on an object not
  // there yet, "cannot create" (seen on the test control plane, 2026-12-04).
  // Before ForbiddenStatusError, a create refused on an apply carried RBAC's empty reason only.
  it('are reported as NamespaceNotGranted for the older wording of a create refused on an apply (no reason)', async () => {
    /** The reason a 403 with `message` for the DaemonSet is reported under. */
    const reasonFor = async (message: string) => {
      const { deps, condition } = meshWith((o) =>
        o.kind === 'DaemonSet'
          ? Promise.reject(new KubeApiError(403, { message }, 'PATCH x'))
          : Promise.resolve(o),
      );
      await reconcile('edge/cdn', deps);
      return condition('Degraded')?.reason;
    };
    assert.equal(await reasonFor('daemonsets.apps "edgemesh-cdn" is forbidden: '), 'NamespaceNotGranted');
    // An admission refusal says why: the server's reason about the object.
    assert.equal(
      await reasonFor(
        'daemonsets.apps "edgemesh-cdn" is forbidden: violates PodSecurity "restricted:latest"',
      ),
      'ApplyRefused',
    );
    // A webhook whose own words end so is not the authorizer: only the server's whole message is.
    assert.equal(
      await reasonFor('admission webhook "policy.example" denied the request: this daemonset is forbidden:'),
      'ApplyRefused',
    );
  });

  for (const verb of ['patch', 'create'])
    it(`are reported as NamespaceNotGranted when RBAC refused them ("cannot ${verb}": a mesh outside meshNamespaces that needs no Secret, or in one whose Role lost its create grant)`, async () => {
      const refusal = `daemonsets.apps "edgemesh-cdn" is forbidden: User "system:serviceaccount:edgemesh-system:edgemesh-operator" cannot ${verb} resource "daemonsets" in API group "apps" in the namespace "edge"`;
      const { deps, events, condition } = meshWith((o) =>
        o.kind === 'DaemonSet'
          ? Promise.reject(new KubeApiError(403, { message: refusal }, 'PATCH x'))
          : Promise.resolve(o),
      );
      const outcome = await reconcile('edge/cdn', deps);
      assert.equal(condition('Degraded')?.reason, 'NamespaceNotGranted');
      assert.match(condition('Degraded')!.message, /DaemonSet objects in namespace edge .*meshNamespaces/);
      assert.ok(events.includes('Warning NamespaceNotGranted'));
      assert.equal(outcome?.requeueAfterMs, 10_000, 'looked at again as other blocked meshes are');
    });

  it('are retried, the status untouched, when the failure may pass (a conflict, a throttle, a server error)', async () => {
    for (const code of [409, 429, 500]) {
      const { deps, mesh } = meshWith((o) =>
        o.kind === 'Service' ? Promise.reject(new KubeApiError(code, {}, 'PATCH x')) : Promise.resolve(o),
      );
      await assert.rejects(reconcile('edge/cdn', deps), new RegExp(String(code)));
      assert.equal(mesh.status, undefined);
    }
  });

  it('judges the rollout by the DaemonSet the apply returned when the cache still has the one before', async () => {
    const rolledOut = (generation: number, observed: number): V1DaemonSet => ({
      metadata: { generation },
      status: {
        observedGeneration: observed,
        desiredNumberScheduled: 1,
        currentNumberScheduled: 1,
        numberReady: 1,
        updatedNumberScheduled: 1,
        numberAvailable: 1,
        numberMisscheduled: 0,
      },
    });
    // The spec changed: the apply made generation 2, which the controller has not observed yet.
    const { deps, events, condition } = meshWith(
      (o) => Promise.resolve(o.kind === 'DaemonSet' ? (rolledOut(2, 1) as KubeObject) : o),
      rolledOut(1, 1),
    );
    await reconcile('edge/cdn', deps);
    // Judged by the cached one (generation 1, rolled out) it would be RolledOut: it has not begun.
    assert.equal(condition('Progressing')?.status, 'True', JSON.stringify(condition('Progressing')));
    assert.equal(condition('Progressing')?.reason, 'RollingOut');
    assert.equal(condition('Ready')?.reason, 'AgentsNotReady');
    assert.ok(!events.includes('Normal MeshReady'));
  });
});

describe('meshes X and X-trust in one namespace', () => {
  const meshNamed = (name: string, createdAt: string) =>
    ({
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      // As the API server sends it: RFC 3339 text (the client's type says Date).
      metadata: { namespace: 'edge', name, uid: name, generation: 1, creationTimestamp: createdAt },
      spec: edgeMeshSpecSchema.parse({
        controlPlane: { natsUrl: 'nats://nats:4222' },
        security: { mtls: false },
      }),
    }) as unknown as EdgeMesh;
  function world(meshes: EdgeMesh[]) {
    const applied: KubeObject[] = [];
    const statuses = new Map<string, EdgeMesh['status']>();
    const deps: ReconcileDeps = {
      mesh: (ns, name) => meshes.find((m) => m.metadata.namespace === ns && m.metadata.name === name),
      daemonSet: () => undefined,
      nodes: () => [node],
      secretLabels: () => Promise.resolve(undefined),
      apply: (o) => (applied.push(o), Promise.resolve(o)),
      remove: () => Promise.resolve(),
      writeStatus: (m, s) => (statuses.set(m.metadata.name, s), Promise.resolve()),
      event: () => Promise.resolve(),
      agentImage: { image: 'edgemesh:1' },
      logger: pino({ level: 'silent' }),
    };
    const degraded = (name: string) =>
      statuses.get(name)?.conditions?.find((c) => c.type === 'Degraded' && c.status === 'True');
    return { deps, applied, degraded };
  }

  for (const [first, second] of [
    ['cdn', 'cdn-trust'],
    ['cdn-trust', 'cdn'],
  ] as const)
    it(`block the one made later (${first} first), which applies nothing, until the other is gone`, async () => {
      const meshes = [meshNamed(first, '2026-12-01T10:00:00Z'), meshNamed(second, '2026-12-01T10:00:05Z')];
      const { deps, applied, degraded } = world(meshes);
      const outcome = await reconcile(`edge/${second}`, deps);
      assert.equal(degraded(second)?.reason, 'NameConflict');
      assert.match(degraded(second)!.message, /edgemesh-cdn-trust/);
      assert.equal(applied.length, 0, 'the later mesh applied nothing');
      assert.ok(outcome && outcome.requeueAfterMs > 0, 'looked at again');
      await reconcile(`edge/${first}`, deps);
      assert.equal(degraded(first), undefined, 'the first runs');
      assert.ok(applied.some((o) => o.metadata.name === `edgemesh-${first}`));
      // The first is deleted: the second runs at its next look.
      meshes.splice(0, 1);
      applied.length = 0;
      await reconcile(`edge/${second}`, deps);
      assert.equal(degraded(second), undefined);
      assert.ok(applied.some((o) => o.metadata.name === `edgemesh-${second}`));
    });

  it('block X-trust when both were made in the same second', async () => {
    const { deps, degraded } = world([
      meshNamed('a', '2026-12-01T10:00:00Z'),
      meshNamed('a-trust', '2026-12-01T10:00:00Z'),
    ]);
    await reconcile('edge/a', deps);
    await reconcile('edge/a-trust', deps);
    assert.equal(degraded('a'), undefined);
    assert.equal(degraded('a-trust')?.reason, 'NameConflict');
  });
});

describe('a mesh whose revocation list cannot be sent on the control plane', () => {
  function meshWithTrust(publish: () => Promise<void>) {
    const { deps, applied, statuses } = grantedSecrets({ security: { mtls: true } });
    const events: { type: string; reason: string; note: string }[] = [];
    deps.meshTrust = () =>
      Promise.resolve({
        issuer: { url: 'https://issuer:9443', certPem: 'c' },
        bundlePem: 'b',
        revocations: { nodes: ['edge-9'], issuedAtMs: 1, signature: 's' },
      });
    deps.publishRevocations = publish;
    deps.event = (_, type, reason, note) => (events.push({ type, reason, note }), Promise.resolve());
    deps.said = new Map();
    const warnings = () => events.filter((e) => e.reason === 'RevocationsNotPublished');
    return { deps, applied, statuses, warnings };
  }

  it('is managed all the same, and a Warning says so once, and again once it comes back', async () => {
    let tooLarge = true;
    const { deps, applied, statuses, warnings } = meshWithTrust(() =>
      tooLarge ? Promise.reject(new RangeError('event of 262144 bytes exceeds 65536')) : Promise.resolve(),
    );
    await reconcile('edge/cdn', deps);
    assert.ok(applied.some((o) => o.kind === 'DaemonSet'));
    assert.ok(statuses.length > 0, 'its status written');
    assert.equal(warnings().length, 1);
    assert.equal(warnings()[0]!.type, 'Warning');
    assert.match(warnings()[0]!.note, /1 nodes.*262144 bytes.*trust ConfigMap/);
    await reconcile('edge/cdn', deps); // a resync: said once
    assert.equal(warnings().length, 1);
    tooLarge = false;
    await reconcile('edge/cdn', deps);
    tooLarge = true;
    await reconcile('edge/cdn', deps);
    assert.equal(warnings().length, 2, 'said again once it came back');
  });

  it('fails on any other error, to be retried', async () => {
    const { deps, warnings } = meshWithTrust(() => Promise.reject(new Error('no NATS')));
    await assert.rejects(reconcile('edge/cdn', deps), /no NATS/);
    assert.equal(warnings().length, 0);
  });
});
