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

  it('grants least privilege: no wildcards, Secrets only read one by one, created or applied (never listed, watched or deleted), Leases only in its namespace', () => {
    const rendered = objects(template());
    type Rule = { apiGroups?: string[]; resources?: string[]; nonResourceURLs?: string[]; verbs: string[] };
    const rules = (kind: string) =>
      rendered.filter((o) => o.kind === kind).flatMap((o) => (o as unknown as { rules: Rule[] }).rules);
    for (const rule of [...rules('ClusterRole'), ...rules('Role')]) {
      for (const field of [rule.apiGroups, rule.resources, rule.nonResourceURLs, rule.verbs])
        assert.ok(!field?.some((v) => v.includes('*')), JSON.stringify(rule));
      assert.ok(!rule.verbs.includes('delete'), 'the operator never deletes: owner references do');
    }
    const secrets = rules('ClusterRole').filter((r) => r.resources?.includes('secrets'));
    // patch: each mesh's NATS user is applied (server-side) and renewed in its Secret.
    assert.deepEqual(
      secrets.flatMap((r) => r.verbs),
      ['get', 'create', 'patch'],
    );
    assert.ok(!rules('ClusterRole').some((r) => r.resources?.includes('leases')));
    assert.ok(rules('Role').some((r) => r.resources?.includes('leases')));
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
