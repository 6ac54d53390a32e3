import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { type FakeApiServer, startFakeApiServer } from '../harness/fake-apiserver.ts';
import { type FieldSchema, hasSubfields, schemaFields } from '../harness/schema-fields.ts';
import { startTestOperator } from '../harness/test-operator.ts';
import { edgeMeshCrd } from '../src/api/crd.ts';
import { edgeMeshSpecSchema } from '../src/api/edgemesh.ts';
import type { Operator } from '../src/controller.ts';
import { eventually } from './support.ts';

type Spec = Record<string, unknown>;
/**
 * How to show a field at work: the mesh goes from `from` to `to` (each merged over BASE), which
 * differ in that field alone, and what the operator renders must change.
 */
type Change = { from?: Spec; to: Spec };

const NS = 'shop';
const BASE: Spec = { controlPlane: { natsUrl: 'nats://nats.invalid:4222' } };
const tol = (...list: Spec[]) => ({ tolerations: list });
const rules = (rule: Spec) => ({
  access: { rules: [{ subjects: ['authenticated'], verbs: ['read'], ...rule }] },
});
const origin = (o: Spec) => ({ origins: [{ prefix: 'a/', url: 'https://origin.example/', ...o }] });
const weight = (rule: Spec) => ({ capacity: [{ nodeSelector: { pool: 'a' }, weight: 0, ...rule }] });
const httpFrom = (peer: Spec) => ({ networkPolicy: { httpFrom: [peer] } });
const resources = (requests: Spec, limits: Spec) => ({ agent: { resources: { requests, limits } } });

/** One change per spec field that has no fields of its own. A field missing here fails the test. */
const CHANGES: Record<string, Change> = {
  nodeSelector: { to: { nodeSelector: { pool: 'a' } } },
  'tolerations[].key': { from: tol({ operator: 'Exists' }), to: tol({ key: 'k', operator: 'Exists' }) },
  'tolerations[].operator': {
    from: tol({ key: 'k', operator: 'Equal' }),
    to: tol({ key: 'k', operator: 'Exists' }),
  },
  'tolerations[].value': { from: tol({ key: 'k', value: 'a' }), to: tol({ key: 'k', value: 'b' }) },
  'tolerations[].effect': {
    from: tol({ operator: 'Exists' }),
    to: tol({ operator: 'Exists', effect: 'NoSchedule' }),
  },
  'tolerations[].tolerationSeconds': {
    from: tol({ operator: 'Exists', effect: 'NoExecute' }),
    to: tol({ operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 60 }),
  },
  affinity: {
    to: {
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [{ matchExpressions: [{ key: 'pool', operator: 'Exists' }] }],
          },
        },
      },
    },
  },
  'agent.image': { to: { agent: { image: 'registry.example/edgemesh:pinned' } } },
  'agent.imagePullPolicy': { to: { agent: { imagePullPolicy: 'Never' } } },
  'agent.imagePullSecrets': { to: { agent: { imagePullSecrets: ['regcred'] } } },
  'agent.resources.requests.cpu': { from: resources({}, {}), to: resources({ cpu: '100m' }, {}) },
  'agent.resources.requests.memory': { from: resources({}, {}), to: resources({ memory: '64Mi' }, {}) },
  'agent.resources.limits.cpu': { from: resources({}, {}), to: resources({}, { cpu: '1' }) },
  'agent.resources.limits.memory': { from: resources({}, {}), to: resources({}, { memory: '1Gi' }) },
  'agent.priorityClassName': { to: { agent: { priorityClassName: 'edge-critical' } } },
  'agent.logLevel': { to: { agent: { logLevel: 'debug' } } },
  'cache.diskSize': { to: { cache: { diskSize: '20Gi' } } },
  'cache.memory': { to: { cache: { memory: '512Mi' } } },
  'cache.storage': { to: { cache: { storage: 'EmptyDir' } } },
  'cache.hostPath': { to: { cache: { hostPath: '/data/edgemesh' } } },
  'cache.defaultTtlSeconds': { to: { cache: { defaultTtlSeconds: 60 } } },
  'replication.factor': { to: { replication: { factor: 2 } } },
  'replication.writeCopies': {
    from: { replication: { factor: 3 } },
    to: { replication: { factor: 3, writeCopies: 2 } },
  },
  'topology.zoneLabel': { to: { topology: { zoneLabel: 'example.com/zone' } } },
  'topology.regionLabel': { to: { topology: { regionLabel: 'example.com/region' } } },
  'origins[].prefix': { from: origin({}), to: origin({ prefix: 'b/' }) },
  'origins[].url': { from: origin({}), to: origin({ url: 'https://other-origin.example/' }) },
  'origins[].headersSecret': { from: origin({}), to: origin({ headersSecret: 'origin-auth' }) },
  'controlPlane.natsUrl': { to: { controlPlane: { natsUrl: 'nats://other.invalid:4222' } } },
  'controlPlane.credentialsSecret': {
    to: { controlPlane: { natsUrl: 'nats://nats.invalid:4222', credentialsSecret: 'nats-creds' } },
  },
  'ports.http': { to: { ports: { http: 7580 } } },
  'ports.grpc': { to: { ports: { grpc: 7581 } } },
  'ports.exposure': { to: { ports: { exposure: 'HostNetwork' } } },
  'networkPolicy.enabled': { to: { networkPolicy: { enabled: false } } },
  'networkPolicy.httpFrom[].namespaceSelector': {
    from: httpFrom({ podSelector: { app: 'web' } }),
    to: httpFrom({ podSelector: { app: 'web' }, namespaceSelector: { team: 'shop' } }),
  },
  'networkPolicy.httpFrom[].podSelector': {
    from: httpFrom({ namespaceSelector: { team: 'shop' } }),
    to: httpFrom({ namespaceSelector: { team: 'shop' }, podSelector: { app: 'web' } }),
  },
  'security.mtls': { to: { security: { mtls: false } } },
  'security.revokedNodes': { to: { security: { revokedNodes: ['edge-1'] } } },
  'security.runAsUser': { to: { security: { runAsUser: 1000 } } },
  'access.anonymous': { to: { access: { anonymous: 'read' } } },
  'access.rules[].subjects': { from: rules({}), to: rules({ subjects: ['anonymous'] }) },
  'access.rules[].verbs': { from: rules({}), to: rules({ verbs: ['write'] }) },
  'access.rules[].prefixes': { from: rules({}), to: rules({ prefixes: ['a/'] }) },
  'telemetry.otlpEndpoint': { to: { telemetry: { otlpEndpoint: 'http://otel.example:4318' } } },
  'transfer.uploadBytesPerSecond': { to: { transfer: { uploadBytesPerSecond: 1_000_000 } } },
  'capacity[].nodeSelector': { from: weight({}), to: weight({ nodeSelector: { pool: 'b' } }) },
  'capacity[].weight': { from: weight({}), to: weight({ weight: 5 }) },
};

const isObject = (v: unknown): v is Spec => typeof v === 'object' && v !== null && !Array.isArray(v);
/** `patch` merged into `base` (objects field by field; arrays and values replaced). */
function merged(base: Spec, patch: Spec): Spec {
  const out: Spec = structuredClone(base);
  for (const [k, v] of Object.entries(patch))
    out[k] = isObject(v) && isObject(out[k]) ? merged(out[k], v) : v;
  return out;
}
/** The paths at which two specs differ (array items compared index by index, as `[]`). */
function differences(a: unknown, b: unknown, path = ''): string[] {
  if (isDeepStrictEqual(a, b)) return [];
  const join = (k: string) => (path ? `${path}.${k}` : k);
  // A field set where it was absent differs in what it sets.
  if ((isObject(a) || a === undefined) && (isObject(b) || b === undefined))
    return [...new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})])].flatMap((k) =>
      differences(a?.[k], b?.[k], join(k)),
    );
  if (Array.isArray(a) && Array.isArray(b) && a.length === b.length)
    return a.flatMap((item, i) => differences(item, b[i], `${path}[]`));
  return [path];
}

/** Two nodes, in different zones and regions by both the standard labels and other ones. */
const NODES = [0, 1].map((i) => ({
  apiVersion: 'v1',
  kind: 'Node',
  metadata: {
    name: `edge-${i}`,
    labels: {
      'topology.kubernetes.io/zone': `zone-${i}`,
      'topology.kubernetes.io/region': `region-${i}`,
      'example.com/zone': `other-zone-${i}`,
      'example.com/region': `other-region-${i}`,
      pool: i === 0 ? 'a' : 'b',
    },
  },
}));

type Obj = {
  metadata: { generation?: number };
  spec?: unknown;
  status?: { observedGeneration?: number };
  data?: Record<string, string>;
};

/**
 * Every spec field of the CRD takes effect: changing it changes what running agents get (a new pod
 * template, which rolls them; the trust ConfigMap, which they watch; the Service or the
 * NetworkPolicy). A field that reaches only the ConfigMap agents read when they start, or nothing,
 * or that this test has no change for, fails it. Against the whole operator on
 * the API server fake, so what the controller adds (trust, credentials, the agent image) counts.
 */
describe('every spec field takes effect', () => {
  let api: FakeApiServer;
  let operator: Operator;

  before(async () => {
    api = await startFakeApiServer();
    for (const node of NODES) api.put(node);
    for (const [name, data] of [
      ['nats-creds', { creds: 'Y3JlZHM=' }],
      ['origin-auth', { Authorization: 'QmVhcmVyIHg=' }],
    ] as const)
      api.put({
        apiVersion: 'v1',
        kind: 'Secret',
        // The origin headers' Secret agrees to leave the cluster (the label); the other needs none.
        metadata: { name, namespace: NS, labels: { 'edgemesh.p2p.dev/origin-headers': 'true' } },
        data,
      });
    operator = await startTestOperator(api, { workers: 1 });
  });
  after(async () => {
    await operator?.stop();
    await api?.close();
  });

  /** Applies a spec and waits for the operator to have reconciled it; what it rendered, by part. */
  const render = async (spec: Spec): Promise<Record<string, unknown>> => {
    const known = api.get('edgemeshes', NS, 'm');
    api.put({
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: {
        name: 'm',
        namespace: NS,
        ...(known ? { resourceVersion: known.metadata.resourceVersion } : {}),
      },
      spec,
    });
    await eventually(() => {
      const mesh = api.get('edgemeshes', NS, 'm') as Obj;
      return mesh.status?.observedGeneration === mesh.metadata.generation || undefined;
    });
    const get = (plural: string, name: string) => api.get(plural, NS, name) as Obj | undefined;
    const config = get('configmaps', 'edgemesh-m')?.data ?? {};
    const trust = get('configmaps', 'edgemesh-m-trust')?.data;
    return {
      'agent.yaml': parse(config['agent.yaml'] ?? 'null') as unknown,
      'topology.yaml': parse(config['topology.yaml'] ?? 'null') as unknown,
      // A revocation list is signed again, with a new date, whenever it changes: its nodes are what counts.
      'trust ConfigMap': trust && {
        ...trust,
        'revoked.json': (JSON.parse(trust['revoked.json'] ?? '{}') as { nodes?: string[] }).nodes,
      },
      DaemonSet: get('daemonsets', 'edgemesh-m')?.spec,
      Service: get('services', 'edgemesh-m')?.spec,
      NetworkPolicy: api.get('networkpolicies', NS, 'edgemesh-m', 'networking.k8s.io')?.spec,
    };
  };

  /** What reaches running agents: a new pod template rolls them; the rest they watch or are behind. */
  const LIVE_PARTS = ['trust ConfigMap', 'DaemonSet', 'Service', 'NetworkPolicy'];

  it('has a change for every field of the CRD’s spec, and each change touches that field alone', () => {
    const spec = (edgeMeshCrd() as { spec: { versions: { schema: { openAPIV3Schema: FieldSchema } }[] } })
      .spec.versions[0]!.schema.openAPIV3Schema.properties!.spec!;
    const fields = schemaFields(spec)
      .filter(([, schema]) => !hasSubfields(schema))
      .map(([path]) => path);
    assert.deepEqual(
      fields.filter((f) => !(f in CHANGES)),
      [],
      'spec fields with no change here: show where each takes effect, or remove it from the CRD',
    );
    assert.deepEqual(
      Object.keys(CHANGES).filter((f) => !fields.includes(f)),
      [],
      'changes of fields the CRD lacks',
    );
    for (const [field, { from = {}, to }] of Object.entries(CHANGES)) {
      const [a, b] = [merged(BASE, from), merged(BASE, to)];
      for (const spec of [a, b]) edgeMeshSpecSchema.parse(spec);
      const changed = differences(a, b);
      assert.ok(
        changed.length > 0 &&
          changed.every((p) => p === field || (/^[.[]/.test(p.slice(field.length)) && p.startsWith(field))),
        `${field}: the change touches ${changed.join(', ')}`,
      );
    }
  });

  it('changes what running agents get when any one field changes', async () => {
    const inert: string[] = [];
    for (const [field, { from = {}, to }] of Object.entries(CHANGES)) {
      const before = await render(merged(BASE, from));
      const after = await render(merged(BASE, to));
      const parts = Object.keys(before).filter((part) => !isDeepStrictEqual(before[part], after[part]));
      console.log(`# ${field}: ${parts.join(', ') || 'NOTHING'}`);
      // Agents read agent.yaml and topology.yaml only when they start: a change there alone reaches
      // no running agent. It must roll them (the DaemonSet's pod template) or reach them another way.
      if (!parts.some((part) => LIVE_PARTS.includes(part))) inert.push(field);
    }
    assert.deepEqual(inert, [], 'fields whose change reaches no running agent');
  });
});
