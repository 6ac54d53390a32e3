import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { CHART, helm, type K8sObject, objects } from '../lib/helm.ts';
import { schemaProblems } from './schemas.ts';

/**
 * An umbrella chart, as a platform team writes one, that depends on charts/edgemesh through a
 * file:// repository (so `helm dependency build` needs no network), with `global` values set.
 */
describe('charts/edgemesh as a dependency of an umbrella chart', () => {
  let dir: string;
  let umbrella: string;
  let env: NodeJS.ProcessEnv;
  const run = (args: string[]) => spawnSync(helm(), args, { encoding: 'utf8', env });
  const { version } = parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as { version: string };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'edgemesh-umbrella-'));
    // Helm's caches and repository list in the test's own directory, never the user's.
    env = {
      ...process.env,
      HELM_CACHE_HOME: join(dir, 'helm', 'cache'),
      HELM_CONFIG_HOME: join(dir, 'helm', 'config'),
      HELM_DATA_HOME: join(dir, 'helm', 'data'),
    };
    umbrella = join(dir, 'platform');
    mkdirSync(join(umbrella, 'templates'), { recursive: true });
    writeFileSync(
      join(umbrella, 'Chart.yaml'),
      stringify({
        apiVersion: 'v2',
        name: 'platform',
        description: 'An umbrella chart with EdgeMesh in it',
        version: '1.0.0',
        icon: 'https://example.com/icon.png',
        dependencies: [{ name: 'edgemesh', version, repository: `file://${CHART}` }],
      }),
    );
    writeFileSync(
      join(umbrella, 'values.yaml'),
      stringify({
        global: {
          imageRegistry: 'mirror.example.com',
          imagePullSecrets: [{ name: 'regcred' }],
          team: 'edge',
        },
        edgemesh: {
          image: { repository: 'mirror.example.com/platform/edgemesh', tag: '1.2.3' },
          imagePullSecrets: [{ name: 'regcred' }],
          nats: { enabled: true },
          operator: { priorityClassName: 'platform-critical', podLabels: { team: 'edge' } },
        },
      }),
    );
    // The umbrella's own object, reading `global` as its other subcharts would.
    writeFileSync(
      join(umbrella, 'templates', 'team.yaml'),
      [
        'apiVersion: v1',
        'kind: ConfigMap',
        'metadata:',
        '  name: {{ .Release.Name }}-team',
        '  labels:',
        '    app.kubernetes.io/name: platform',
        '    app.kubernetes.io/instance: {{ .Release.Name }}',
        '    app.kubernetes.io/version: "1.0.0"',
        '    app.kubernetes.io/managed-by: {{ .Release.Service }}',
        'data:',
        '  team: {{ .Values.global.team | quote }}',
        '',
      ].join('\n'),
    );
    const build = run(['dependency', 'build', umbrella]);
    assert.equal(build.status, 0, build.stdout + build.stderr);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('builds its dependency offline from the file:// repository', () => {
    assert.ok(existsSync(join(umbrella, 'charts', `edgemesh-${version}.tgz`)));
  });

  it('passes helm lint --strict, with more global values set on the command line', () => {
    const lint = run([
      'lint',
      '--strict',
      umbrella,
      '--set',
      'global.region=eu-west',
      '--set-json',
      'global.flags={"a":[1,2]}',
    ]);
    assert.equal(lint.status, 0, lint.stdout + lint.stderr);
  });

  it('renders objects that pass Kubernetes’ schemas, with the subchart’s values and the CRD', async () => {
    const rendered = run([
      'template',
      'platform',
      umbrella,
      '-n',
      'platform',
      '--include-crds',
      '--set',
      'global.region=eu-west',
    ]);
    assert.equal(rendered.status, 0, rendered.stderr);
    const all = objects(rendered.stdout);
    assert.deepEqual(await schemaProblems(all), []);
    assert.ok(
      all.some(
        (o) => o.kind === 'CustomResourceDefinition' && o.metadata.name === 'edgemeshes.edgemesh.p2p.dev',
      ),
    );
    const operator = all.find(
      (o) => o.kind === 'Deployment' && o.metadata.name === 'platform-edgemesh-operator',
    ) as
      | (K8sObject & {
          spec: {
            template: {
              metadata: { labels: Record<string, string> };
              spec: {
                priorityClassName: string;
                imagePullSecrets: { name: string }[];
                containers: { image: string; env: { name: string; value?: string }[] }[];
              };
            };
          };
        })
      | undefined;
    assert.ok(operator, `the operator Deployment, among ${all.map((o) => o.metadata.name).join(', ')}`);
    const pod = operator.spec.template;
    assert.equal(pod.spec.containers[0]!.image, 'mirror.example.com/platform/edgemesh:1.2.3');
    assert.equal(
      pod.spec.containers[0]!.env.find((e) => e.name === 'EDGEMESH_OPERATOR_AGENT_IMAGE')?.value,
      'mirror.example.com/platform/edgemesh:1.2.3',
    );
    assert.deepEqual(pod.spec.imagePullSecrets, [{ name: 'regcred' }]);
    assert.equal(pod.spec.priorityClassName, 'platform-critical');
    assert.equal(pod.metadata.labels.team, 'edge');
    assert.ok(all.some((o) => o.kind === 'Deployment' && o.metadata.name === 'platform-edgemesh-nats'));
    const team = all.find(
      (o) => o.kind === 'ConfigMap' && o.metadata.name === 'platform-team',
    ) as unknown as {
      data: { team: string };
    };
    assert.equal(team.data.team, 'edge', 'global reaches the umbrella’s own templates');
  });
});
