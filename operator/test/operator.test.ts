import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { parse } from 'yaml';
import type { Operator, OperatorConfig } from '../src/controller.ts';
import { fakeCluster, realCluster, type TestCluster } from '../harness/test-cluster.ts';
import { startTestOperator, TEST_AGENT_IMAGE } from '../harness/test-operator.ts';
import { agentReports } from '../harness/agent-reports.ts';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { startNatsServer } from '../../agent/harness/nats-server.ts';
import { eventually, node } from './support.ts';

const NS = 'shop';
const EDGEMESHES = { group: 'edgemesh.p2p.dev', version: 'v1alpha1', namespace: NS, plural: 'edgemeshes' };
/** The control plane the meshes' agents report on (played by the tests: agent-reports.ts). */
const nats = await startNatsServer();
after(() => nats.stop());
const mesh = (name: string, spec: Record<string, unknown> = {}) => ({
  apiVersion: 'edgemesh.p2p.dev/v1alpha1',
  kind: 'EdgeMesh',
  metadata: { name, namespace: NS },
  spec: { controlPlane: { natsUrl: nats.url }, ...spec },
});
type Obj = {
  metadata: { resourceVersion?: string; generation?: number; ownerReferences?: { kind: string }[] };
  [k: string]: unknown;
};
type Status = {
  conditions?: { type: string; status: string; reason: string; message: string }[];
  desiredAgents?: number;
  readyAgents?: number;
  reportingAgents?: number;
  zones?: Record<string, number>;
  observedGeneration?: number;
};

const NODES = ['eu-1a', 'eu-1b', 'us-1a'].map((zone, i) => node(`edge-${i}`, zone, zone.slice(0, 4)));

/**
 * The operator's behaviour, against the API server fake and against a real control plane (etcd,
 * kube-apiserver, controllers, kwok's simulated nodes: e2e/harness/control-plane.ts); the faults
 * only the fake can inject are tested on the fake alone. Where the two answered differently, the
 * fake was corrected (docs/operator.md lists what was found).
 */
const real = await realCluster(NODES, [NS, 'edgemesh-system']);
if (typeof real === 'string') console.log(`# operator suite on a real control plane skipped: ${real}`);
operatorSuite('the API server fake', () => fakeCluster(NODES));
if (typeof real !== 'string') operatorSuite(real.name, () => Promise.resolve(real));

function operatorSuite(against: string, make: () => Promise<TestCluster>) {
  describe(`the operator against ${against} (real client-node over HTTP)`, () => {
    let api: TestCluster;
    let operator: Operator;
    let custom: CustomObjectsApi;
    const status = async (name: string) =>
      ((await api.get('edgemeshes', NS, name)) as { status?: Status } | undefined)?.status;
    const condition = async (name: string, type: string) =>
      (await status(name))?.conditions?.find((c) => c.type === type);
    const rollOut = (name: string) => api.rollOut(NS, `edgemesh-${name}`, 3);
    let nc: NatsConnection;
    const operatorOptions = (): Partial<OperatorConfig> => ({
      onLostLease: () => assert.fail('lost the lease'),
      // A real control plane shares two cores with everything else here: client-go's own timing.
      ...(api.fake ? {} : { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 1000 }),
    });
    /** The mesh's agents report on the control plane until it is Ready. */
    const reportUntilReady = async (name: string) => {
      const report = await eventually(
        () =>
          agentReports({
            secret: (ns, n) => api.get('secrets', ns, n),
            nats: nc,
            namespace: NS,
            name,
            nodes: NODES.map((n) => n.metadata.name),
          }).catch(() => undefined),
        30_000,
        250,
      );
      await eventually(
        async () => {
          await report();
          return (await condition(name, 'Ready'))?.status === 'True' || undefined;
        },
        40_000,
        250,
      );
    };

    /** A merge patch to a mesh, as `kubectl patch --type merge` sends it. */
    const patchSpec = (name: string, body: object) =>
      custom.patchNamespacedCustomObject(
        { ...EDGEMESHES, name, body },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );

    before(async () => {
      api = await make();
      const kc = new KubeConfig();
      kc.loadFromString(api.kubeconfig);
      custom = kc.makeApiClient(CustomObjectsApi);
      nc = await connect({ servers: nats.url });
      operator = await startTestOperator(api, operatorOptions());
    });
    after(async () => {
      await operator?.stop();
      await nc?.close();
      await api?.close();
    });

    it('applies every child, owned by the mesh, and turns Ready once the agents are ready and report on the control plane', async () => {
      await custom.createNamespacedCustomObject({ ...EDGEMESHES, body: mesh('cdn') });
      await eventually(() => api.get('daemonsets', NS, 'edgemesh-cdn'));
      for (const plural of ['serviceaccounts', 'networkpolicies', 'configmaps', 'services', 'daemonsets']) {
        const child = (await eventually(() => api.get(plural, NS, 'edgemesh-cdn'))) as Obj;
        assert.equal(child.metadata.ownerReferences?.[0]?.kind, 'EdgeMesh', `${plural} is owned by the mesh`);
      }
      const cm = (await api.get('configmaps', NS, 'edgemesh-cdn')) as unknown as {
        data: Record<string, string>;
      };
      assert.equal((parse(cm.data['agent.yaml']!) as { mesh: string }).mesh, 'shop_cdn');
      assert.deepEqual(Object.keys((parse(cm.data['topology.yaml']!) as { nodes: object }).nodes), [
        'edge-0',
        'edge-1',
        'edge-2',
      ]);
      await eventually(async () => (await condition('cdn', 'Progressing')) !== undefined || undefined);
      if (api.fake) {
        // Only the fake can hold the agents back; on a real control plane kwok runs them at once.
        assert.equal((await condition('cdn', 'Ready'))?.status, 'False');
        assert.equal((await condition('cdn', 'Progressing'))?.status, 'True');
      }
      assert.deepEqual((await status('cdn'))?.zones, { 'eu-1a': 1, 'eu-1b': 1, 'us-1a': 1 });
      await rollOut('cdn');
      // Rolled out, but no agent reports on the control plane yet: not Ready, and it says why.
      await eventually(
        async () => (await condition('cdn', 'Progressing'))?.reason === 'RolledOut' || undefined,
        30_000,
      );
      assert.equal((await condition('cdn', 'Ready'))?.status, 'False');
      assert.match((await condition('cdn', 'Ready'))!.reason, /^(AgentsNotReporting|Connecting)$/);
      assert.equal((await condition('cdn', 'ControlPlaneConnected'))?.status, 'False');
      await reportUntilReady('cdn');
      assert.equal((await status('cdn'))?.readyAgents, 3);
      assert.equal((await status('cdn'))?.reportingAgents, 3);
      assert.equal((await condition('cdn', 'ControlPlaneConnected'))?.status, 'True');
      await eventually(async () => {
        const events = (await api.list('events', NS, 'events.k8s.io')) as { reason?: string }[];
        return events.some((e) => e.reason === 'MeshReady') || undefined;
      });
    });

    it('rolls the agents when the spec changes, and records the generation it saw', async () => {
      type Ds = { spec: { template: { metadata: { annotations: Record<string, string> } } } };
      const before = (await api.get('daemonsets', NS, 'edgemesh-cdn')) as unknown as Ds;
      const hash = before.spec.template.metadata.annotations['edgemesh.p2p.dev/config-hash'];
      await patchSpec('cdn', { spec: { replication: { factor: 2 } } });
      const generation = (await api.get('edgemeshes', NS, 'cdn'))!.metadata.generation;
      assert.equal(generation, 2);
      await eventually(async () => {
        const ds = (await api.get('daemonsets', NS, 'edgemesh-cdn')) as unknown as Ds;
        return ds.spec.template.metadata.annotations['edgemesh.p2p.dev/config-hash'] !== hash || undefined;
      });
      await eventually(async () => (await status('cdn'))?.observedGeneration === 2 || undefined);
    });

    it('reports a spec that cannot work as Degraded and leaves the running mesh alone', async () => {
      // The spec is untouched (generation); on the fake, where nothing else writes the DaemonSet,
      // not even its metadata (resourceVersion).
      const dsVersion = async () => {
        const ds = (await api.get('daemonsets', NS, 'edgemesh-cdn'))!;
        const { generation, resourceVersion } = ds.metadata as {
          generation?: number;
          resourceVersion?: string;
        };
        return api.fake ? `${generation}/${resourceVersion}` : generation;
      };
      const before = await dsVersion();
      await patchSpec('cdn', {
        spec: { controlPlane: { credentialsSecret: 'nats-creds' }, cache: { diskSize: '20Gi' } },
      });
      await eventually(async () => (await condition('cdn', 'Degraded'))?.status === 'True' || undefined);
      assert.equal((await condition('cdn', 'Degraded'))?.reason, 'SecretMissing');
      assert.equal(await dsVersion(), before, 'the DaemonSet was not touched');
      await api.put({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'nats-creds', namespace: NS },
        data: { creds: 'Y3JlZHM=' },
      });
      await eventually(
        async () => (await condition('cdn', 'Degraded'))?.status === 'False' || undefined,
        20_000,
      );
    });

    it('sends no Secret as origin headers unless the Secret agrees (its label), and no Secret over http', async () => {
      await api.put({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'app-credentials', namespace: NS },
        data: { Authorization: 'QmVhcmVyIHg=' },
      });
      await patchSpec('cdn', {
        spec: {
          origins: [{ prefix: 'a/', url: 'https://collector.example/', headersSecret: 'app-credentials' }],
        },
      });
      await eventually(
        async () => (await condition('cdn', 'Degraded'))?.reason === 'SecretNotAllowed' || undefined,
      );
      await api.remove('secrets', NS, 'app-credentials');
      await api.put({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: {
          name: 'app-credentials',
          namespace: NS,
          labels: { 'edgemesh.p2p.dev/origin-headers': 'true' },
        },
        data: { Authorization: 'QmVhcmVyIHg=' },
      });
      await eventually(
        async () => (await condition('cdn', 'Degraded'))?.status === 'False' || undefined,
        20_000,
      );
      await patchSpec('cdn', { spec: { origins: [] } });
    });

    it('refuses what the CRD schema refuses (bounds, patterns, CEL rules)', async () => {
      const create = (body: object) =>
        custom.createNamespacedCustomObject({ ...EDGEMESHES, body }).then(
          () => 201,
          (e: { code: number }) => e.code,
        );
      // A cache the agents cannot hold (a size with no unit, bytes past what they count), refused
      // with its reason by Kubernetes' CEL quantity library on the real server and by the fake.
      const refusal = (body: object) =>
        custom.createNamespacedCustomObject({ ...EDGEMESHES, body }).then(
          () => 'accepted',
          (e: { code: number; body?: unknown }) => `${e.code} ${String(e.body)}`,
        );
      for (const [cache, reason] of [
        [{ diskSize: '100' }, 'cache.diskSize must be from 64Mi to 1Pi'],
        [{ diskSize: '63Mi' }, 'cache.diskSize must be from 64Mi to 1Pi'],
        [{ diskSize: '8Ei' }, 'cache.diskSize must be from 64Mi to 1Pi'],
        // Past the bounds by less than a byte: compared exactly, on both.
        [{ diskSize: '67108863.999999999' }, 'cache.diskSize must be from 64Mi to 1Pi'],
        [{ diskSize: '1125899906842624.5' }, 'cache.diskSize must be from 64Mi to 1Pi'],
        [{ memory: '2Ti' }, 'cache.memory must be at most 1Ti'],
      ] as const) {
        const answer = await refusal(mesh('bad-cache', { cache }));
        assert.match(answer, /^422 /, JSON.stringify(cache));
        assert.ok(answer.includes(reason), `${JSON.stringify(cache)}: ${answer}`);
      }
      // Finer than a billionth rounds up, to 64Mi here.
      const edge = mesh('edge-cache', { cache: { diskSize: '67108863.9999999991', memory: '0' } });
      assert.equal(await create(edge), 201);
      await custom.deleteNamespacedCustomObject({ ...EDGEMESHES, name: 'edge-cache' });
      assert.equal(await create(mesh('bad1', { replication: { factor: 2, writeCopies: 3 } })), 422);
      assert.equal(await create(mesh('bad2', { ports: { http: 7000, grpc: 7000 } })), 422);
      assert.equal(await create(mesh('bad3', { cache: { diskSize: 'lots' } })), 422);
      assert.equal(await create({ ...mesh('bad4'), spec: {} }), 422, 'controlPlane is required');
      assert.equal(await create(mesh('Bad_Name')), 422, 'a name that is not a DNS subdomain');
      // Names its children could not carry (a Service's is edgemesh-<name>, a DNS-1035 label).
      for (const name of ['cdn.v2', `m${'x'.repeat(54)}`])
        assert.match(await refusal(mesh(name)), /^422 .*metadata[./]name/, name);
      const longest = `9${'x'.repeat(53)}`;
      assert.equal(await create(mesh(longest)), 201, 'a 54-character name, starting with a digit');
      await custom.deleteNamespacedCustomObject({ ...EDGEMESHES, name: longest });
      const overHttp = { origins: [{ prefix: 'a/', url: 'http://origin.example/', headersSecret: 's' }] };
      assert.equal(await create(mesh('bad5', overHttp)), 422, 'origin headers over http');
    });

    it('carries node topology changes into the agents’ configuration and the status', async () => {
      await api.put(node('edge-3', 'us-1b', 'us-1'));
      await eventually(async () => {
        const cm = (await api.get('configmaps', NS, 'edgemesh-cdn')) as unknown as {
          data: Record<string, string>;
        };
        return (
          (parse(cm.data['topology.yaml']!) as { nodes: Record<string, { zone: string }> }).nodes['edge-3']
            ?.zone === 'us-1b' || undefined
        );
      });
      await eventually(async () => (await status('cdn'))?.zones?.['us-1b'] === 1 || undefined);
      // The zone's last node leaves: the zone leaves the status too (a merge patch must say so).
      await api.remove('nodes', undefined, 'edge-3');
      await eventually(async () => {
        const zones = (await status('cdn'))?.zones;
        return (zones !== undefined && !('us-1b' in zones)) || undefined;
      });
    });

    it('undoes changes someone else makes to a watched child', async () => {
      const service = (await api.get('services', NS, 'edgemesh-cdn'))!;
      await api.put({ ...service, spec: { ...(service.spec as object), internalTrafficPolicy: 'Cluster' } });
      await eventually(async () => {
        const now = (await api.get('services', NS, 'edgemesh-cdn')) as unknown as {
          spec: { internalTrafficPolicy: string };
        };
        return now.spec.internalTrafficPolicy === 'Local' || undefined;
      });
    });

    it('converges through dropped watches, expired versions, 409, 429 and 500 answers', async (t) => {
      const fake = api.fake;
      if (!fake) return t.skip('faults are injected by the fake only');
      fake.fault({ method: 'PATCH', status: 500, times: 3 });
      fake.fault({ method: 'PATCH', path: '/status', status: 409, times: 2 });
      fake.fault({ method: 'GET', path: '/secrets/', status: 429, times: 1 });
      // The next read of EdgeMeshes (the watch's reconnect or the relist after 410) fails: the
      // informer must restart itself.
      const restartsBefore = operator.metrics.informerRestarts;
      fake.fault({ method: 'GET', path: /\/edgemeshes(\?|$)/, status: 500, times: 1 });
      fake.dropWatches();
      fake.compact();
      await custom.createNamespacedCustomObject({
        ...EDGEMESHES,
        body: mesh('stream', { cache: { storage: 'EmptyDir' } }),
      });
      await eventually(() => api.get('daemonsets', NS, 'edgemesh-stream'), 40_000);
      await rollOut('stream');
      await reportUntilReady('stream');
      assert.ok(operator.metrics.informerRestarts > restartsBefore, 'the failed informer restarted');
    });

    it('owns every child it makes, so the garbage collector deletes them with the mesh', async () => {
      // The deletion itself is the garbage collector's (the fake's here; the real one in
      // e2e/cluster.test.ts); the operator's part is the owner reference on every child.
      const made = (await custom.createNamespacedCustomObject({
        ...EDGEMESHES,
        body: mesh('gone', { ports: { http: 7600, grpc: 7601 } }),
      })) as { metadata: { uid: string } };
      const children = ['serviceaccounts', 'networkpolicies', 'configmaps', 'services', 'daemonsets'];
      type Owned = {
        metadata: {
          ownerReferences?: {
            kind: string;
            uid: string;
            controller?: boolean;
            blockOwnerDeletion?: boolean;
          }[];
        };
      };
      for (const plural of children) {
        const child = (await eventually(() => api.get(plural, NS, 'edgemesh-gone'))) as unknown as Owned;
        assert.deepEqual(
          child.metadata.ownerReferences?.map((o) => [o.kind, o.uid, o.controller, o.blockOwnerDeletion]),
          [['EdgeMesh', made.metadata.uid, true, true]],
          `${plural} owned by the mesh`,
        );
      }
      await custom.deleteNamespacedCustomObject({ ...EDGEMESHES, name: 'gone' });
      for (const plural of children)
        await eventually(
          async () => (await api.get(plural, NS, 'edgemesh-gone')) === undefined || undefined,
          60_000,
        );
    });

    it('runs the operator’s agent image: a new setting (an upgrade) rolls every mesh but one that names its own; pull Secrets of both reach the DaemonSet; with no image, meshes are Degraded and left alone', async () => {
      type PodSpec = {
        containers: { image: string; imagePullPolicy?: string }[];
        initContainers?: { image: string; imagePullPolicy?: string }[];
        imagePullSecrets?: { name: string }[];
      };
      const podSpec = async (name: string) =>
        (
          (await api.get('daemonsets', NS, `edgemesh-${name}`)) as unknown as {
            spec: { template: { spec: PodSpec } };
          }
        ).spec.template.spec;
      await custom.createNamespacedCustomObject({
        ...EDGEMESHES,
        body: mesh('pinned', {
          ports: { http: 7700, grpc: 7701 },
          agent: {
            image: 'registry.example/edgemesh:pinned',
            imagePullPolicy: 'Always',
            imagePullSecrets: ['mine'],
          },
        }),
      });
      await eventually(() => api.get('daemonsets', NS, 'edgemesh-pinned'));
      assert.equal((await podSpec('cdn')).containers[0]!.image, TEST_AGENT_IMAGE);
      assert.equal((await podSpec('pinned')).containers[0]!.image, 'registry.example/edgemesh:pinned');

      // A helm upgrade: the operator restarts with a new image, pull policy and pull Secret.
      const next = 'registry.example/edgemesh:next';
      await operator.stop();
      operator = await startTestOperator(api, {
        ...operatorOptions(),
        agentImage: { image: next, pullPolicy: 'IfNotPresent', pullSecrets: ['regcred'] },
      });
      const cdn = await eventually(async () => {
        const spec = await podSpec('cdn');
        return spec.containers[0]!.image === next ? spec : undefined;
      }, 30_000);
      assert.equal(cdn.containers[0]!.imagePullPolicy, 'IfNotPresent');
      assert.deepEqual(
        cdn.initContainers?.map((c) => c.image),
        [next],
        'the cache-owner init container too',
      );
      assert.deepEqual(cdn.imagePullSecrets, [{ name: 'regcred' }]);
      const pinned = await eventually(async () => {
        const spec = await podSpec('pinned');
        return spec.imagePullSecrets?.length === 2 ? spec : undefined;
      }, 30_000);
      assert.deepEqual(pinned.imagePullSecrets, [{ name: 'regcred' }, { name: 'mine' }]);
      assert.equal(pinned.containers[0]!.image, 'registry.example/edgemesh:pinned', 'the spec wins');
      assert.equal(pinned.containers[0]!.imagePullPolicy, 'Always', 'the spec wins');

      // No image anywhere: the mesh says so, and its agents keep running what they run.
      await operator.stop();
      operator = await startTestOperator(api, { ...operatorOptions(), agentImage: {} });
      await eventually(
        async () => (await condition('cdn', 'Degraded'))?.reason === 'NoAgentImage' || undefined,
        30_000,
      );
      assert.match((await condition('cdn', 'Degraded'))!.message, /EDGEMESH_OPERATOR_AGENT_IMAGE/);
      assert.equal((await podSpec('cdn')).containers[0]!.image, next, 'the DaemonSet was left alone');
      assert.equal((await condition('pinned', 'Degraded'))?.status, 'False', 'a mesh naming its own works');
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
}
