import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { CHART, dryRun, helm, type K8sObject, objects } from '../lib/helm.ts';
import { VALUES_FILE, valueEntries } from '../lib/values-doc.ts';
import { schemaProblems } from './schemas.ts';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

/**
 * A value other than the default for every documented key of values.yaml (a test fails when a key
 * has none here, so a new value cannot go untested).
 */
const ALTERNATIVE: Record<string, unknown> = {
  global: { imageRegistry: 'mirror.example.com', anything: { nested: [1, 2] } },
  nameOverride: 'mesh',
  fullnameOverride: 'edge-prod',
  meshNamespaces: ['shop', 'factory'],
  'agents.priorityClass.create': false,
  'agents.priorityClass.name': 'edge-critical',
  'agents.priorityClass.value': 500000,
  'agents.scrapeNamespaces': ['monitoring'],
  'image.repository': 'registry.example.com:5000/platform/edgemesh',
  'image.tag': '1.2.3',
  'image.digest': DIGEST,
  'image.pullPolicy': 'Always',
  imagePullSecrets: [{ name: 'regcred' }, { name: 'mirror-creds' }],
  'operator.replicas': 3,
  'operator.workers': 8,
  'operator.leaderElection': { leaseDurationMs: 20000, renewDeadlineMs: 15000, retryPeriodMs: 3000 },
  'operator.logLevel': 'debug',
  'operator.otlpEndpoint': 'http://otel-collector.observability:4318',
  'operator.resources': { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '512Mi' } },
  'operator.nodeSelector': { 'node-role.kubernetes.io/control-plane': '' },
  'operator.tolerations': [
    { key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' },
  ],
  'operator.affinity': {
    podAntiAffinity: {
      preferredDuringSchedulingIgnoredDuringExecution: [
        {
          weight: 100,
          podAffinityTerm: {
            topologyKey: 'kubernetes.io/hostname',
            labelSelector: { matchLabels: { 'app.kubernetes.io/component': 'operator' } },
          },
        },
      ],
    },
  },
  'operator.topologySpreadConstraints': [
    { maxSkew: 1, topologyKey: 'topology.kubernetes.io/zone', whenUnsatisfiable: 'ScheduleAnyway' },
    {
      maxSkew: 1,
      topologyKey: 'kubernetes.io/hostname',
      whenUnsatisfiable: 'DoNotSchedule',
      labelSelector: {
        matchExpressions: [{ key: 'app.kubernetes.io/component', operator: 'In', values: ['operator'] }],
      },
    },
    {
      maxSkew: 2,
      topologyKey: 'topology.kubernetes.io/region',
      whenUnsatisfiable: 'ScheduleAnyway',
      labelSelector: {},
    },
  ],
  'operator.priorityClassName': 'system-cluster-critical',
  'operator.podAnnotations': { 'example.com/team': 'platform' },
  'operator.podLabels': { 'example.com/cost-centre': 'edge' },
  'operator.extraEnv': [
    { name: 'NODE_EXTRA_CA_CERTS', value: '/etc/ssl/certs/ca-certificates.crt' },
    { name: 'EXAMPLE_TOKEN', valueFrom: { secretKeyRef: { name: 'example', key: 'token' } } },
  ],
  'operator.extraArgs': ['--max-old-space-size=256'],
  'operator.podDisruptionBudget.enabled': false,
  'operator.podDisruptionBudget.maxUnavailable': '50%',
  'operator.serviceAccount.annotations': { 'iam.gke.io/gcp-service-account': 'edgemesh@example.iam' },
  'operator.probePort': 9090,
  'operator.issuerPort': 9443,
  'nats.enabled': true,
  'nats.image': { repository: 'mirror.example.com/nats', tag: '2.10.29-alpine', pullPolicy: 'Always' },
  'nats.externalUrl': 'nats://nats.messaging:4222',
  'nats.resources': { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } },
  'nats.networkPolicy.enabled': false,
  'serviceMonitor.enabled': true,
  'serviceMonitor.interval': '15s',
  'serviceMonitor.labels': { release: 'kube-prometheus-stack' },
  'dashboards.enabled': true,
  'dashboards.label': 'grafana_dashboard_edge',
  'dashboards.labelValue': 'yes',
  'podMonitor.enabled': true,
  'podMonitor.interval': '15s',
  'podMonitor.namespaces': ['edge-a', 'edge-b'],
  'podMonitor.labels': { release: 'kube-prometheus-stack' },
};

/** Keys that act only with others: what to set alongside to see them act. */
const CONTEXT: Record<string, object> = {
  // Shown in NOTES when the chart deploys no NATS of its own.
  'nats.externalUrl': { nats: { enabled: false } },
};

/** Every optional object on: the base each key's effect is looked for against. */
const BASE = {
  nats: { enabled: true },
  serviceMonitor: { enabled: true },
  podMonitor: { enabled: true },
  dashboards: { enabled: true },
};

function setIn(target: Record<string, unknown>, path: string[], value: unknown): Record<string, unknown> {
  let at = target;
  for (const key of path.slice(0, -1)) at = (at[key] ??= {}) as Record<string, unknown>;
  at[path.at(-1)!] = value;
  return target;
}
const merged = (...parts: object[]) =>
  parts.reduce<Record<string, unknown>>(function merge(into, part) {
    for (const [k, v] of Object.entries(part)) {
      if (v && typeof v === 'object' && !Array.isArray(v) && into[k] && typeof into[k] === 'object')
        into[k] = merge({ ...(into[k] as Record<string, unknown>) }, v as object);
      else into[k] = v;
    }
    return into;
  }, {});

const entries = valueEntries(readFileSync(VALUES_FILE, 'utf8')).filter((e) => !e.section);

/** Every key set to its alternative at once, except switches that would hide others. */
const EVERY = Object.entries(ALTERNATIVE)
  .filter(([key]) => key !== 'operator.podDisruptionBudget.enabled')
  .reduce((values, [key, value]) => setIn(values, key.split('.'), value), {} as Record<string, unknown>);

type Pod = {
  metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
  spec: {
    imagePullSecrets?: { name: string }[];
    priorityClassName?: string;
    topologySpreadConstraints?: { labelSelector?: Record<string, unknown> }[];
    containers: {
      image: string;
      imagePullPolicy: string;
      command?: string[];
      env?: { name: string; value?: string }[];
    }[];
  };
};
const deployment = (rendered: K8sObject[], suffix: string) =>
  (
    rendered.find((o) => o.kind === 'Deployment' && o.metadata.name.endsWith(suffix)) as unknown as {
      spec: { template: Pod };
    }
  ).spec.template;
const envOf = (pod: Pod) => new Map(pod.spec.containers[0]!.env!.map((e) => [e.name, e.value]));

describe('the chart’s values', () => {
  it('has an alternative for every documented key (so each is tested below), and for no other', () => {
    const keys = entries.map((e) => e.path.join('.'));
    assert.deepEqual(
      keys.filter((key) => !(key in ALTERNATIVE)),
      [],
    );
    assert.deepEqual(
      Object.keys(ALTERNATIVE).filter((key) => !keys.includes(key)),
      [],
    );
  });

  it('renders objects that pass Kubernetes’ schemas with every value set at once (global included)', async () => {
    const rendered = objects(dryRun(EVERY).manifest);
    assert.ok(rendered.some((o) => o.kind === 'ServiceMonitor'));
    assert.deepEqual(await schemaProblems(rendered), []);
    const lint = spawnSync(helm(), ['lint', '--strict', CHART, '-f', '-'], {
      input: JSON.stringify(EVERY),
      encoding: 'utf8',
    });
    assert.equal(lint.status, 0, lint.stdout + lint.stderr);
  });

  it('has no key that does nothing: each one changes what is rendered (objects or NOTES)', () => {
    const render = (values: object) => {
      const { manifest, notes } = dryRun(values);
      return `${manifest}\n${notes}`;
    };
    for (const entry of entries) {
      const key = entry.path.join('.');
      // Helm hands `global` to every subchart; accepting it is the point, reading it is not.
      if (key === 'global') continue;
      const base = merged(BASE, CONTEXT[key] ?? {});
      const changed = render(setIn(structuredClone(base), entry.path, ALTERNATIVE[key]));
      const unchanged = render(setIn(structuredClone(base), entry.path, entry.value));
      assert.ok(changed !== unchanged, `${key} changes nothing`);
    }
  });

  it('sets the image once: the operator runs it and hands it, its pull policy and pull secrets to every agent', () => {
    const values = {
      image: { repository: 'registry.example.com/platform/edgemesh', tag: '1.2.3', pullPolicy: 'Always' },
      imagePullSecrets: [{ name: 'regcred' }, { name: 'mirror-creds' }],
    };
    const pod = deployment(objects(dryRun(values).manifest), '-operator');
    const container = pod.spec.containers[0]!;
    assert.equal(container.image, 'registry.example.com/platform/edgemesh:1.2.3');
    assert.equal(container.imagePullPolicy, 'Always');
    assert.deepEqual(pod.spec.imagePullSecrets, values.imagePullSecrets);
    const env = envOf(pod);
    assert.equal(env.get('EDGEMESH_OPERATOR_AGENT_IMAGE'), container.image);
    assert.equal(env.get('EDGEMESH_OPERATOR_AGENT_IMAGE_PULL_POLICY'), 'Always');
    assert.equal(env.get('EDGEMESH_OPERATOR_IMAGE_PULL_SECRETS'), 'regcred,mirror-creds');

    const byDigest = deployment(objects(dryRun({ image: { digest: DIGEST } }).manifest), '-operator');
    assert.equal(byDigest.spec.containers[0]!.image, `edgemesh@${DIGEST}`);
    assert.equal(envOf(byDigest).get('EDGEMESH_OPERATOR_AGENT_IMAGE'), `edgemesh@${DIGEST}`);

    const defaults = deployment(objects(dryRun().manifest), '-operator');
    assert.equal(
      defaults.spec.containers[0]!.image,
      'edgemesh:0.1.0',
      'the appVersion, in no registry we do not own',
    );
    assert.equal(envOf(defaults).get('EDGEMESH_OPERATOR_AGENT_IMAGE'), 'edgemesh:0.1.0');
    assert.ok(!envOf(defaults).has('EDGEMESH_OPERATOR_IMAGE_PULL_SECRETS'), 'no secrets, no variable');
    assert.equal(defaults.spec.imagePullSecrets, undefined);
  });

  it('gives the bundled NATS the pull secrets too, and keeps its own image', () => {
    const values = { nats: { enabled: true }, imagePullSecrets: [{ name: 'regcred' }] };
    const pod = deployment(objects(dryRun(values).manifest), '-nats');
    assert.deepEqual(pod.spec.imagePullSecrets, [{ name: 'regcred' }]);
    assert.equal(pod.spec.containers[0]!.image, 'nats:2.10-alpine');
  });

  it('puts each standard value where Kubernetes reads it', () => {
    const rendered = objects(dryRun(EVERY).manifest);
    const pod = deployment(rendered, '-operator');
    assert.ok(
      rendered.every((o) => o.metadata.name.startsWith('edge-prod')),
      'fullnameOverride names every object',
    );
    assert.ok(
      rendered.every((o) => o.metadata.labels?.['app.kubernetes.io/name'] === 'mesh'),
      'nameOverride',
    );
    assert.equal(pod.metadata.labels['example.com/cost-centre'], 'edge');
    assert.equal(pod.metadata.labels['app.kubernetes.io/component'], 'operator');
    assert.equal(pod.metadata.annotations?.['example.com/team'], 'platform');
    assert.equal(pod.spec.priorityClassName, 'system-cluster-critical');
    const operatorPods = {
      matchLabels: {
        'app.kubernetes.io/name': 'mesh',
        'app.kubernetes.io/instance': 'edgemesh',
        'app.kubernetes.io/component': 'operator',
      },
    };
    assert.deepEqual(pod.spec.topologySpreadConstraints![0]!.labelSelector, operatorPods);
    // An empty one too (as given, it would count every pod of the namespace).
    assert.deepEqual(pod.spec.topologySpreadConstraints![2]!.labelSelector, operatorPods);
    // One given with its own labelSelector keeps it as given (the operator's labels would narrow it).
    assert.deepEqual(pod.spec.topologySpreadConstraints![1]!.labelSelector, {
      matchExpressions: [{ key: 'app.kubernetes.io/component', operator: 'In', values: ['operator'] }],
    });
    const container = pod.spec.containers[0]!;
    assert.deepEqual(container.command, [
      'node',
      '--max-semi-space-size=8',
      '--max-old-space-size=256',
      'dist/operator.mjs',
    ]);
    const env = envOf(pod);
    assert.equal(env.get('EDGEMESH_OPERATOR_OTLP_ENDPOINT'), 'http://otel-collector.observability:4318');
    assert.equal(env.get('NODE_EXTRA_CA_CERTS'), '/etc/ssl/certs/ca-certificates.crt');
    assert.ok(env.has('EXAMPLE_TOKEN'));
    const account = rendered.find((o) => o.kind === 'ServiceAccount')!;
    assert.deepEqual((account.metadata as { annotations?: object }).annotations, {
      'iam.gke.io/gcp-service-account': 'edgemesh@example.iam',
    });
    const pdb = rendered.find((o) => o.kind === 'PodDisruptionBudget') as unknown as {
      spec: { maxUnavailable: unknown; selector: { matchLabels: Record<string, string> } };
    };
    assert.equal(pdb.spec.maxUnavailable, '50%');
    for (const [k, v] of Object.entries(pdb.spec.selector.matchLabels))
      assert.equal(pod.metadata.labels[k], v, 'the PDB selects the operator’s pods');
  });

  it('refuses what its schema does not know, and accepts any `global`', () => {
    const refused = (values: object, at: string) =>
      assert.throws(() => dryRun(values), new RegExp(`at '${at}'`), JSON.stringify(values));
    refused({ operator: { replica: 2 } }, '/operator');
    refused({ image: { digest: 'latest' } }, '/image/digest');
    refused({ imagePullSecrets: ['regcred'] }, '/imagePullSecrets/0');
    refused({ operator: { extraArgs: ['dist/other.mjs'] } }, '/operator/extraArgs/0');
    refused({ fullnameOverride: 'x'.repeat(64) }, '/fullnameOverride');
    refused({ meshNamespaces: ['Shop'] }, '/meshNamespaces/0');
    dryRun({ global: { imageRegistry: 'r', imagePullSecrets: [{ name: 's' }], whatever: { a: [1] } } });
  });
});
