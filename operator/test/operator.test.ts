import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { type FakeApiServer, startFakeApiServer } from '../harness/fake-apiserver.ts';
import type { Operator } from '../src/controller.ts';
import { startTestOperator } from '../harness/test-operator.ts';
import { eventually, node } from './support.ts';

const NS = 'shop';
const EDGEMESHES = { group: 'edgemesh.p2p.dev', version: 'v1alpha1', namespace: NS, plural: 'edgemeshes' };
const mesh = (name: string, spec: Record<string, unknown> = {}) => ({
  apiVersion: 'edgemesh.p2p.dev/v1alpha1',
  kind: 'EdgeMesh',
  metadata: { name, namespace: NS },
  spec: { controlPlane: { natsUrl: 'nats://nats.edgemesh-system:4222' }, ...spec },
});
type Obj = {
  metadata: { resourceVersion?: string; generation?: number; ownerReferences?: { kind: string }[] };
  [k: string]: unknown;
};
type Status = {
  conditions?: { type: string; status: string; reason: string }[];
  desiredAgents?: number;
  readyAgents?: number;
  zones?: Record<string, number>;
  observedGeneration?: number;
};

describe('the operator against an API server fake (real client-node over HTTP)', () => {
  let api: FakeApiServer;
  let operator: Operator;
  let custom: CustomObjectsApi;
  const status = (name: string) =>
    (api.get('edgemeshes', NS, name) as { status?: Status } | undefined)?.status;
  const condition = (name: string, type: string) => status(name)?.conditions?.find((c) => c.type === type);
  /** What a DaemonSet controller and kubelets would report once every agent runs. */
  const rollOut = (name: string) => {
    const ds = api.get('daemonsets', NS, `edgemesh-${name}`)!;
    const n = 3;
    api.put({
      ...ds,
      status: {
        observedGeneration: ds.metadata.generation,
        desiredNumberScheduled: n,
        currentNumberScheduled: n,
        numberReady: n,
        updatedNumberScheduled: n,
        numberMisscheduled: 0,
      },
    });
  };

  /** A merge patch to a mesh, as `kubectl patch --type merge` sends it. */
  const patchSpec = (name: string, body: object) =>
    custom.patchNamespacedCustomObject(
      { ...EDGEMESHES, name, body },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );

  before(async () => {
    api = await startFakeApiServer({ bookmarkMs: 200 });
    for (const [i, zone] of ['eu-1a', 'eu-1b', 'us-1a'].entries())
      api.put(node(`edge-${i}`, zone, zone.slice(0, 4)));
    const kc = new KubeConfig();
    kc.loadFromString(api.kubeconfig);
    custom = kc.makeApiClient(CustomObjectsApi);
    operator = await startTestOperator(api, { onLostLease: () => assert.fail('lost the lease') });
  });
  after(async () => {
    await operator?.stop();
    await api?.close();
  });

  it('applies every child, owned by the mesh, and turns Ready once the agents are', async () => {
    await custom.createNamespacedCustomObject({
      ...EDGEMESHES,
      body: mesh('cdn'),
    });
    await eventually(() => api.get('daemonsets', NS, 'edgemesh-cdn'));
    for (const plural of [
      'serviceaccounts',
      'roles',
      'rolebindings',
      'configmaps',
      'services',
      'daemonsets',
    ]) {
      const child = (await eventually(() => api.get(plural, NS, 'edgemesh-cdn'))) as Obj;
      assert.equal(child.metadata.ownerReferences?.[0]?.kind, 'EdgeMesh', `${plural} is owned by the mesh`);
    }
    const cm = api.get('configmaps', NS, 'edgemesh-cdn') as unknown as { data: Record<string, string> };
    assert.equal((parse(cm.data['agent.yaml']!) as { mesh: string }).mesh, 'shop-cdn');
    assert.deepEqual(Object.keys((parse(cm.data['topology.yaml']!) as { nodes: object }).nodes), [
      'edge-0',
      'edge-1',
      'edge-2',
    ]);
    await eventually(() => condition('cdn', 'Progressing')?.status === 'True' || undefined);
    assert.equal(condition('cdn', 'Ready')?.status, 'False');
    assert.deepEqual(status('cdn')?.zones, { 'eu-1a': 1, 'eu-1b': 1, 'us-1a': 1 });
    rollOut('cdn');
    await eventually(() => condition('cdn', 'Ready')?.status === 'True' || undefined);
    assert.equal(status('cdn')?.readyAgents, 3);
    const events = api.list('events', NS, 'events.k8s.io') as { reason?: string }[];
    assert.ok(
      events.some((e) => e.reason === 'MeshReady'),
      'a MeshReady event',
    );
  });

  it('rolls the agents when the spec changes, and records the generation it saw', async () => {
    const before = api.get('daemonsets', NS, 'edgemesh-cdn') as unknown as {
      spec: { template: { metadata: { annotations: Record<string, string> } } };
    };
    const hash = before.spec.template.metadata.annotations['edgemesh.p2p.dev/config-hash'];
    await patchSpec('cdn', { spec: { replication: { factor: 2 } } });
    const generation = api.get('edgemeshes', NS, 'cdn')!.metadata.generation;
    assert.equal(generation, 2);
    await eventually(() => {
      const ds = api.get('daemonsets', NS, 'edgemesh-cdn') as unknown as typeof before;
      return ds.spec.template.metadata.annotations['edgemesh.p2p.dev/config-hash'] !== hash || undefined;
    });
    await eventually(() => status('cdn')?.observedGeneration === 2 || undefined);
  });

  it('reports a spec that cannot work as Degraded and leaves the running mesh alone', async () => {
    const dsBefore = api.get('daemonsets', NS, 'edgemesh-cdn')!.metadata.resourceVersion;
    await patchSpec('cdn', {
      spec: { controlPlane: { credentialsSecret: 'nats-creds' }, cache: { diskSize: '20Gi' } },
    });
    await eventually(() => condition('cdn', 'Degraded')?.status === 'True' || undefined);
    assert.equal(condition('cdn', 'Degraded')?.reason, 'SecretMissing');
    assert.equal(
      api.get('daemonsets', NS, 'edgemesh-cdn')!.metadata.resourceVersion,
      dsBefore,
      'the DaemonSet was not touched',
    );
    api.put({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'nats-creds', namespace: NS },
      data: { creds: 'Y3JlZHM=' },
    });
    await eventually(() => condition('cdn', 'Degraded')?.status === 'False' || undefined, 20_000);
  });

  it('refuses what the CRD schema refuses (bounds, patterns, CEL rules)', async () => {
    const create = (body: object) =>
      custom.createNamespacedCustomObject({ ...EDGEMESHES, body }).then(
        () => 201,
        (e: { code: number }) => e.code,
      );
    assert.equal(await create(mesh('bad1', { replication: { factor: 2, writeCopies: 3 } })), 422);
    assert.equal(await create(mesh('bad2', { ports: { http: 7000, grpc: 7000 } })), 422);
    assert.equal(await create(mesh('bad3', { cache: { diskSize: 'lots' } })), 422);
    assert.equal(await create({ ...mesh('bad4'), spec: {} }), 422, 'controlPlane is required');
  });

  it('carries node topology changes into the agents’ configuration', async () => {
    api.put(node('edge-3', 'us-1b', 'us-1'));
    await eventually(() => {
      const cm = api.get('configmaps', NS, 'edgemesh-cdn') as unknown as { data: Record<string, string> };
      return (
        (parse(cm.data['topology.yaml']!) as { nodes: Record<string, { zone: string }> }).nodes['edge-3']
          ?.zone === 'us-1b' || undefined
      );
    });
  });

  it('undoes changes someone else makes to a watched child', async () => {
    const service = api.get('services', NS, 'edgemesh-cdn')!;
    api.put({ ...service, spec: { ...(service.spec as object), internalTrafficPolicy: 'Cluster' } });
    await eventually(() => {
      const now = api.get('services', NS, 'edgemesh-cdn') as unknown as {
        spec: { internalTrafficPolicy: string };
      };
      return now.spec.internalTrafficPolicy === 'Local' || undefined;
    });
  });

  it('converges through dropped watches, expired versions, 409, 429 and 500 answers', async () => {
    api.fault({ method: 'PATCH', status: 500, times: 3 });
    api.fault({ method: 'PATCH', path: '/status', status: 409, times: 2 });
    api.fault({ method: 'GET', path: '/secrets/', status: 429, times: 1 });
    // The next read of EdgeMeshes (the watch's reconnect or the relist after 410) fails: the
    // informer must restart itself.
    const restartsBefore = operator.metrics.informerRestarts;
    api.fault({ method: 'GET', path: /\/edgemeshes(\?|$)/, status: 500, times: 1 });
    api.dropWatches();
    api.compact();
    await custom.createNamespacedCustomObject({
      ...EDGEMESHES,
      body: mesh('stream', { cache: { storage: 'EmptyDir' } }),
    });
    await eventually(() => api.get('daemonsets', NS, 'edgemesh-stream'), 40_000);
    rollOut('stream');
    await eventually(() => condition('stream', 'Ready')?.status === 'True' || undefined, 40_000);
    assert.ok(operator.metrics.informerRestarts > restartsBefore, 'the failed informer restarted');
  });

  it('deletes every child with the mesh (garbage collection through owner references)', async () => {
    await custom.deleteNamespacedCustomObject({
      group: 'edgemesh.p2p.dev',
      version: 'v1alpha1',
      namespace: NS,
      plural: 'edgemeshes',
      name: 'stream',
    });
    for (const plural of ['serviceaccounts', 'roles', 'rolebindings', 'configmaps', 'services', 'daemonsets'])
      assert.equal(api.get(plural, NS, 'edgemesh-stream'), undefined, `${plural} deleted`);
  });

  it('serves /healthz, /readyz and controller-runtime metrics', async () => {
    const base = `http://127.0.0.1:${operator.probePort}`;
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const text = await (await fetch(`${base}/metrics`)).text();
    for (const name of [
      'controller_runtime_reconcile_total',
      'workqueue_depth',
      'leader_election_master_status',
      'controller_runtime_reconcile_time_seconds_bucket',
    ])
      assert.match(text, new RegExp(name), name);
  });
});
