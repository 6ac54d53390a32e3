import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { builtinValidator } from '../../operator/harness/builtin-validation.ts';
import { crdValidator } from '../../operator/harness/crd-validation.ts';
import { CHART, dryRun, helm, type K8sObject, objects, template } from '../lib/helm.ts';
import { INSTALL_FILE, installYaml } from '../lib/install.ts';
import { schemaProblems } from './schemas.ts';

const CRD_FILE = new URL('../../crds/edgemeshes.edgemesh.p2p.dev.yaml', import.meta.url);
const SAMPLES = new URL('../../manifests/samples/', import.meta.url);

/** Every values variant the tests render. */
const VARIANTS: Record<string, string[]> = {
  defaults: [],
  'bundled NATS, a ServiceMonitor and dashboards': [
    ...[
      '--set',
      'nats.enabled=true',
      '--set',
      'serviceMonitor.enabled=true',
      '--set',
      'dashboards.enabled=true',
    ],
  ],
  'external NATS, 3 replicas, pinned image': [
    ...['--set', 'nats.externalUrl=nats://nats.messaging:4222', '--set', 'operator.replicas=3'],
    ...['--set', 'image.tag=1.2.3', '--set', 'operator.nodeSelector.pool=system'],
  ],
};

describe('the Helm chart', () => {
  it('passes helm lint --strict, with and without the bundled NATS', () => {
    for (const set of [[], ['--set', 'nats.enabled=true']]) {
      const r = spawnSync(helm(), ['lint', '--strict', CHART, ...set], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stdout + r.stderr);
    }
  });

  it('checks every kind it renders against a schema: a kind without one is an error, not a pass', async () => {
    const validate = await builtinValidator([{ group: 'example.com', version: 'v1', kind: 'Widget' }]);
    assert.match(validate('example.com', 'v1', 'Widget', {}).join(), /no schema known/);
    const monitor = await builtinValidator([
      { group: 'monitoring.coreos.com', version: 'v1', kind: 'ServiceMonitor' },
    ]);
    assert.notDeepEqual(
      monitor('monitoring.coreos.com', 'v1', 'ServiceMonitor', { spec: { endpoints: 'not a list' } }),
      [],
      'a ServiceMonitor is checked too',
    );
    // ... and the routine every rendering test here goes through reports it.
    const widget = { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' } };
    assert.match((await schemaProblems([widget])).join(), /Widget w: no schema known/);
  });

  it('refuses values its schema does not know (additionalProperties: false)', () => {
    const r = spawnSync(helm(), ['template', 'x', CHART, '--set', 'operator.replica=2'], {
      encoding: 'utf8',
    });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /replica/);
  });

  for (const [name, args] of Object.entries(VARIANTS)) {
    it(`renders valid Kubernetes objects: ${name}`, async () => {
      const rendered = objects(template(args));
      assert.deepEqual(await schemaProblems(rendered), []);
      for (const o of rendered) {
        for (const label of [
          'app.kubernetes.io/name',
          'app.kubernetes.io/instance',
          'app.kubernetes.io/version',
          'app.kubernetes.io/managed-by',
        ])
          assert.ok(o.metadata.labels?.[label], `${o.kind} ${o.metadata.name} has ${label}`);
      }
    });
  }

  it('runs the operator as two non-root replicas with leader election and probes', () => {
    const rendered = objects(template());
    const deployment = rendered.find((o) => o.kind === 'Deployment') as K8sObject & {
      spec: {
        replicas: number;
        template: {
          spec: {
            securityContext: { runAsNonRoot: boolean };
            containers: {
              env: { name: string }[];
              readinessProbe: unknown;
              securityContext: { readOnlyRootFilesystem: boolean };
            }[];
          };
        };
      };
    };
    assert.equal(deployment.spec.replicas, 2);
    const pod = deployment.spec.template.spec;
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(pod.containers[0]!.securityContext.readOnlyRootFilesystem, true);
    assert.ok(pod.containers[0]!.readinessProbe);
    assert.ok(
      pod.containers[0]!.env.some((e) => e.name === 'POD_NAME'),
      'the pod name is its lease identity',
    );
    assert.equal(rendered.filter((o) => o.kind === 'Deployment').length, 1, 'no NATS unless asked');
    const withNats = objects(template(['--set', 'nats.enabled=true']));
    assert.ok(withNats.some((o) => o.kind === 'Deployment' && o.metadata.name.endsWith('-nats')));
  });

  it('gives the bundled NATS the configuration the operator writes: the names agree', () => {
    type Pod = {
      containers: { args?: string[]; env?: { name: string; value?: string }[]; volumeMounts?: unknown[] }[];
      volumes?: { name: string; configMap?: { name: string }; secret?: { secretName: string } }[];
    };
    const rendered = objects(template(['--set', 'nats.enabled=true']));
    const pod = (suffix: string) =>
      (
        rendered.find((o) => o.kind === 'Deployment' && o.metadata.name.endsWith(suffix)) as unknown as {
          spec: { template: { spec: Pod } };
        }
      ).spec.template.spec;
    const authName = pod('-operator').containers[0]!.env!.find(
      (e) => e.name === 'EDGEMESH_OPERATOR_NATS_AUTH',
    )?.value;
    assert.equal(authName, 'edgemesh-nats');
    const nats = pod('-nats');
    // The operator writes ConfigMap `<EDGEMESH_OPERATOR_NATS_AUTH>-config` (operator/src/nats/nats-auth-store.ts).
    // ... and its serving certificate in Secret `<EDGEMESH_OPERATOR_NATS_AUTH>-tls` (controller.ts).
    assert.deepEqual(nats.volumes, [
      { name: 'auth', configMap: { name: `${authName}-config` } },
      { name: 'tls', secret: { secretName: `${authName}-tls` } },
    ]);
    assert.deepEqual(nats.containers[0]!.args, [
      ...['--config', '/etc/nats-auth/nats.conf', '--port', '4222'],
      ...['--tls', '--tlscert', '/etc/nats-tls/tls.crt', '--tlskey', '/etc/nats-tls/tls.key'],
    ]);
    const without = objects(template());
    const operatorEnv = (
      without.find((o) => o.kind === 'Deployment') as unknown as { spec: { template: { spec: Pod } } }
    ).spec.template.spec.containers[0]!.env!;
    assert.ok(!operatorEnv.some((e) => e.name === 'EDGEMESH_OPERATOR_NATS_AUTH'), 'no NATS to manage');
  });

  it('grants least privilege: no wildcards, reads and reports cluster-wide, every write and every Secret only in its own and the mesh namespaces, no Roles to grant, Leases only in its namespace', () => {
    const rendered = objects(template(['--set', 'meshNamespaces={shop,factory}']));
    type Rule = { apiGroups?: string[]; resources?: string[]; nonResourceURLs?: string[]; verbs: string[] };
    const rules = (kind: string) =>
      rendered.filter((o) => o.kind === kind).flatMap((o) => (o as unknown as { rules: Rule[] }).rules);
    for (const rule of [...rules('ClusterRole'), ...rules('Role')]) {
      for (const field of [rule.apiGroups, rule.resources, rule.nonResourceURLs, rule.verbs])
        assert.ok(!field?.some((v) => v.includes('*')), JSON.stringify(rule));
      // The one deletion: a mesh's NetworkPolicy once the mesh turns it off.
      if (rule.verbs.includes('delete')) assert.deepEqual(rule.resources, ['networkpolicies']);
    }
    const cluster = rules('ClusterRole');
    assert.ok(!cluster.some((r) => r.resources?.includes('secrets')), 'no Secret is readable cluster-wide');
    assert.ok(
      !cluster.some((r) => r.apiGroups?.includes('rbac.authorization.k8s.io')),
      'it makes no Role or RoleBinding (agents hold no API token)',
    );
    // Cluster-wide, it writes only a mesh's status, token reviews and events: nothing it could run.
    const writes = cluster.flatMap((r) =>
      r.verbs
        .filter((v) => !['get', 'list', 'watch'].includes(v))
        .flatMap((v) => (r.resources ?? r.nonResourceURLs ?? []).map((res) => `${res}:${v}`)),
    );
    assert.deepEqual(writes.sort(), ['edgemeshes/status:patch', 'events:create', 'tokenreviews:create']);
    for (const resource of ['configmaps', 'pods'])
      assert.ok(!cluster.some((r) => r.resources?.includes(resource)), `no ${resource} read cluster-wide`);
    const roles = rendered.filter((o) => o.kind === 'Role' && o.metadata.name === 'edgemesh-operator');
    assert.deepEqual(
      roles.map((o) => o.metadata.namespace),
      ['shop', 'factory', 'edgemesh-system'],
      'meshNamespaces and its own, once each',
    );
    for (const role of roles) {
      // patch: server-side apply of each child, and each mesh's NATS user renewed in its Secret.
      assert.deepEqual((role as unknown as { rules: Rule[] }).rules, [
        { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'create', 'patch'] },
        { apiGroups: ['apps'], resources: ['daemonsets'], verbs: ['create', 'patch'] },
        { apiGroups: [''], resources: ['services', 'serviceaccounts'], verbs: ['create', 'patch'] },
        { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'create', 'patch'] },
        {
          apiGroups: ['networking.k8s.io'],
          resources: ['networkpolicies'],
          verbs: ['create', 'patch', 'delete'],
        },
        { apiGroups: [''], resources: ['pods'], verbs: ['get'] },
        { apiGroups: ['edgemesh.p2p.dev'], resources: ['edgemeshes/finalizers'], verbs: ['update'] },
      ]);
      const binding = rendered.find(
        (o) =>
          o.kind === 'RoleBinding' &&
          o.metadata.namespace === role.metadata.namespace &&
          o.metadata.name === role.metadata.name,
      ) as unknown as { subjects: { name: string; namespace: string }[] };
      assert.deepEqual(
        binding.subjects.map((s) => `${s.namespace}/${s.name}`),
        ['edgemesh-system/edgemesh-operator'],
      );
    }
    assert.ok(!cluster.some((r) => r.resources?.includes('leases')));
    assert.ok(rules('Role').some((r) => r.resources?.includes('leases')));
  });

  it('keeps the names a release always had (cut at 63), and cuts only where a Service’s suffix needs room', () => {
    // Helm's release names have at most 53 characters; fullnameOverride up to 63.
    for (const [length, override] of [8, 40, 41, 50, 53, 63].map((n) => [n, n > 53] as const)) {
      const release = `r${'x'.repeat(length - 1)}`;
      const rendered = objects(
        template(
          [
            ...['--set', 'nats.enabled=true', '--set', 'podMonitor.enabled=true'],
            ...(override ? ['--set', `fullnameOverride=${release}`] : []),
          ],
          { release: override ? 'edgemesh' : release },
        ),
      );
      // What the chart always named them: the release name plus -edgemesh, cut at 63, plus the suffix.
      const fullname = (override ? release : `${release}-edgemesh`).slice(0, 63).replace(/-+$/, '');
      for (const o of rendered) {
        if (o.kind === 'Service') {
          assert.ok(o.metadata.name.length <= 63, `Service ${o.metadata.name} is a DNS label`);
          assert.ok(o.metadata.name.startsWith(fullname.slice(0, 40)), o.metadata.name);
        } else if (o.metadata.name.endsWith('-nats')) {
          // The bundled NATS's objects share its Service's name (the operator derives them from it).
          assert.ok(rendered.some((svc) => svc.kind === 'Service' && svc.metadata.name === o.metadata.name));
        } else
          assert.ok(o.metadata.name.startsWith(fullname), `${o.kind} ${o.metadata.name} keeps ${fullname}`);
      }
      const deployment = rendered.find(
        (o) => o.kind === 'Deployment' && o.metadata.name.endsWith('-operator'),
      )!;
      assert.equal(deployment.metadata.name, `${fullname}-operator`);
      // The issuer URL and the NATS the operator manages name the Services that exist.
      const env = new Map(
        (
          deployment as unknown as {
            spec: { template: { spec: { containers: { env: { name: string; value?: string }[] }[] } } };
          }
        ).spec.template.spec.containers[0]!.env.map((e) => [e.name, e.value]),
      );
      const services = rendered.filter((o) => o.kind === 'Service').map((o) => o.metadata.name);
      assert.ok(services.includes(env.get('EDGEMESH_OPERATOR_NATS_AUTH')!), 'the NATS Service');
      assert.ok(services.includes(new URL(env.get('EDGEMESH_OPERATOR_ISSUER_URL')!).hostname.split('.')[0]!));
    }
  });

  it('gives the agents a PriorityClass the chart makes, through the operator', () => {
    const rendered = objects(template());
    const priorityClass = rendered.find((o) => o.kind === 'PriorityClass') as unknown as {
      metadata: { name: string };
      value: number;
      globalDefault: boolean;
    };
    assert.equal(priorityClass.metadata.name, 'edgemesh-agent');
    assert.ok(priorityClass.value > 0 && priorityClass.value < 1_000_000_000 && !priorityClass.globalDefault);
    const env = (list: K8sObject[]) =>
      (
        list.find((o) => o.kind === 'Deployment') as unknown as {
          spec: { template: { spec: { containers: { env: { name: string; value?: string }[] }[] } } };
        }
      ).spec.template.spec.containers[0]!.env.find((e) => e.name === 'EDGEMESH_OPERATOR_AGENT_PRIORITY_CLASS')
        ?.value;
    assert.equal(env(rendered), 'edgemesh-agent');
    const none = objects(template(['--set', 'agents.priorityClass.create=false']));
    assert.ok(!none.some((o) => o.kind === 'PriorityClass'));
    assert.equal(env(none), undefined, 'no class named that does not exist');
  });

  it('hands Prometheus’s namespaces to the operator, for every mesh’s NetworkPolicy (and says when the PodMonitor lacks them)', () => {
    const env = (args: string[]) =>
      new Map(
        (
          objects(template(args)).find((o) => o.kind === 'Deployment') as unknown as {
            spec: { template: { spec: { containers: { env: { name: string; value?: string }[] }[] } } };
          }
        ).spec.template.spec.containers[0]!.env.map((e) => [e.name, e.value]),
      ).get('EDGEMESH_OPERATOR_SCRAPE_NAMESPACES');
    assert.equal(
      env(['--set', 'agents.scrapeNamespaces={monitoring,observability}']),
      'monitoring,observability',
    );
    assert.equal(env([]), undefined);
    assert.match(dryRun({ podMonitor: { enabled: true } }).notes, /agents\.scrapeNamespaces is empty/);
    assert.doesNotMatch(
      dryRun({ podMonitor: { enabled: true }, agents: { scrapeNamespaces: ['monitoring'] } }).notes,
      /scrapeNamespaces is empty/,
    );
  });

  it('fences the bundled NATS: its client port only from the operator and the agents of the mesh namespaces', () => {
    const rendered = objects(template(['--set', 'nats.enabled=true', '--set', 'meshNamespaces={shop}']));
    type Policy = {
      spec: {
        podSelector: { matchLabels: Record<string, string> };
        policyTypes: string[];
        ingress: {
          from: {
            podSelector?: { matchLabels: Record<string, string> };
            namespaceSelector?: { matchExpressions: { key: string; operator: string; values: string[] }[] };
          }[];
          ports: { port: number }[];
        }[];
      };
    };
    const policy = rendered.find((o) => o.kind === 'NetworkPolicy') as unknown as Policy;
    const podLabels = (suffix: string) =>
      (
        rendered.find((o) => o.kind === 'Deployment' && o.metadata.name.endsWith(suffix)) as unknown as {
          spec: { template: { metadata: { labels: Record<string, string> } } };
        }
      ).spec.template.metadata.labels;
    const selects = (selector: Record<string, string> | undefined, labels: Record<string, string>) =>
      Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
    assert.ok(selects(policy.spec.podSelector.matchLabels, podLabels('-nats')), 'it selects the NATS pod');
    assert.deepEqual(policy.spec.policyTypes, ['Ingress']);
    const [rule, ...others] = policy.spec.ingress;
    assert.ok(rule && others.length === 0);
    assert.deepEqual(rule.ports, [{ protocol: 'TCP', port: 4222 }]);
    const [operator, agents] = rule.from;
    assert.ok(
      selects(operator?.podSelector?.matchLabels, podLabels('-operator')) && !operator?.namespaceSelector,
    );
    assert.ok(
      !selects(operator?.podSelector?.matchLabels, podLabels('-nats')),
      'not every pod of the release',
    );
    assert.deepEqual(agents?.podSelector?.matchLabels, { 'app.kubernetes.io/name': 'edgemesh-agent' });
    assert.deepEqual(agents?.namespaceSelector?.matchExpressions, [
      { key: 'kubernetes.io/metadata.name', operator: 'In', values: ['shop', 'edgemesh-system'] },
    ]);
    const off = objects(
      template(['--set', 'nats.enabled=true', '--set', 'nats.networkPolicy.enabled=false']),
    );
    assert.ok(!off.some((o) => o.kind === 'NetworkPolicy'));
  });

  it('ships the CRD from crds/ (a link, not a copy), and `helm show crds` (the upgrade path) prints it', () => {
    const crd = objects(template(['--include-crds'])).find((o) => o.kind === 'CustomResourceDefinition');
    assert.deepEqual(crd, parse(readFileSync(CRD_FILE, 'utf8')));
    const shown = spawnSync(helm(), ['show', 'crds', CHART], { encoding: 'utf8' });
    assert.equal(shown.status, 0, shown.stderr);
    assert.deepEqual(objects(shown.stdout), [crd]);
  });

  it('prints NOTES whose mesh command runs as pasted: the heredoc closes and makes a mesh the CRD accepts', () => {
    const crd = parse(readFileSync(CRD_FILE, 'utf8')) as {
      spec: { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] };
    };
    const validate = crdValidator(crd.spec.versions[0]!.schema.openAPIV3Schema);
    for (const nats of [{ enabled: true }, { externalUrl: 'nats://nats.messaging:4222' }, {}]) {
      const { notes } = dryRun({ nats });
      const command = /^kubectl apply -f - <<'YAML'\n[\s\S]*?\nYAML$/m.exec(notes)?.[0];
      assert.ok(command, `a heredoc whose terminator starts its line:\n${notes}`);
      // As pasted into a shell, with kubectl reading what it would apply.
      const shell = spawnSync('bash', ['-euc', `kubectl() { cat; }\n${command}`], { encoding: 'utf8' });
      assert.equal(shell.status, 0, shell.stderr);
      const mesh = parse(shell.stdout) as { kind: string; spec: { controlPlane: { natsUrl: string } } };
      assert.equal(mesh.kind, 'EdgeMesh');
      assert.deepEqual(validate(mesh), []);
      if (nats.enabled)
        assert.equal(mesh.spec.controlPlane.natsUrl, 'nats://edgemesh-nats.edgemesh-system:4222');
      assert.match(notes, /helm show crds .* \| kubectl apply --server-side -f -/, 'the CRD upgrade step');
    }
  });

  it('keeps manifests/install.yaml rendered from the chart (npm run manifests)', () => {
    assert.equal(readFileSync(INSTALL_FILE, 'utf8'), installYaml());
  });

  it('has samples that the CRD accepts', () => {
    const crd = parse(readFileSync(CRD_FILE, 'utf8')) as {
      spec: { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] };
    };
    const validate = crdValidator(crd.spec.versions[0]!.schema.openAPIV3Schema);
    const files = readdirSync(SAMPLES).filter((f) => f.endsWith('.yaml'));
    assert.ok(files.length >= 3);
    for (const file of files) {
      const mesh = parse(readFileSync(new URL(file, SAMPLES), 'utf8')) as Record<string, unknown>;
      assert.deepEqual(validate(mesh), [], file);
    }
  });
});
