import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { helm, objects } from '../lib/helm.ts';
import { packageChart, withImageRepository } from '../lib/package.ts';
import { VALUES_FILE } from '../lib/values-doc.ts';

const ROOT = new URL('../../', import.meta.url);
const WORKFLOW = new URL('.github/workflows/release.yaml', ROOT);
const DOCKERFILE = new URL('Dockerfile', ROOT);
const OCI_LABELS = ['source', 'version', 'revision', 'licenses'];

type Step = {
  id?: string;
  name?: string;
  uses?: string;
  run?: string;
  env?: Record<string, string>;
  with?: Record<string, unknown>;
};
type Workflow = {
  on: { push: { tags: string[] }; workflow_dispatch: { inputs: { version: { required: boolean } } } };
  env: Record<string, string>;
  jobs: Record<string, { steps: Step[] }>;
};

const workflow = parse(readFileSync(WORKFLOW, 'utf8')) as Workflow;
const steps = Object.values(workflow.jobs).flatMap((j) => j.steps);
const step = (match: (s: Step) => boolean | undefined, what: string) => {
  const found = steps.find((s) => match(s));
  assert.ok(found, `the workflow has a step that ${what}`);
  return found;
};

/** Runs the workflow's naming step in bash, as Actions would, and returns what it outputs. */
function names(env: Record<string, string>): { status: number | null; outputs: Record<string, string> } {
  const dir = mkdtempSync(join(tmpdir(), 'edgemesh-names-'));
  try {
    const output = join(dir, 'output');
    const run = spawnSync(
      'bash',
      ['-eo', 'pipefail', '-c', step((s) => s.id === 'names', 'names things').run!],
      {
        env: { PATH: process.env.PATH, GITHUB_OUTPUT: output, ...env },
        encoding: 'utf8',
      },
    );
    const text = run.status === 0 ? readFileSync(output, 'utf8') : '';
    return {
      status: run.status,
      outputs: Object.fromEntries(
        text
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => l.split(/=(.*)/s).slice(0, 2)),
      ),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('the release: OCI labels, a workflow that names image and chart from one setting, the packaged chart', () => {
  it('labels the image with source, version, revision and licences, each from a build argument', () => {
    const runtime = readFileSync(DOCKERFILE, 'utf8')
      .split(/^FROM /m)
      .at(-1)!;
    const args = new Set([...runtime.matchAll(/^ARG (\w+)/gm)].map((m) => m[1]));
    for (const label of OCI_LABELS) {
      const arg = new RegExp(`org\\.opencontainers\\.image\\.${label}="\\$(\\w+)"`).exec(runtime)?.[1];
      assert.ok(arg && args.has(arg), `org.opencontainers.image.${label} from an ARG of the runtime stage`);
    }
  });

  it('installs its npm dependencies before any registry login (no install script finds credentials)', () => {
    const install = steps.findIndex((s) => s.run?.trim().startsWith('npm ci'));
    const login = steps.findIndex((s) => s.uses?.startsWith('docker/login-action'));
    assert.ok(install >= 0 && login >= 0, 'both steps are there');
    assert.ok(install < login, 'npm ci runs first');
  });

  it('runs on a version tag or by hand with a version', () => {
    assert.deepEqual(workflow.on.push.tags, ['v*.*.*']);
    assert.equal(workflow.on.workflow_dispatch.inputs.version.required, true);
  });

  it('has one setting for where things go, and names no registry anywhere else', () => {
    assert.deepEqual(Object.keys(workflow.env), ['REGISTRY']);
    // The default is the namespace of whoever runs it, never one of ours.
    assert.match(
      workflow.env.REGISTRY!,
      /^\$\{\{ vars\.EDGEMESH_REGISTRY \|\| format\('ghcr\.io\/\{0\}', github\.repository_owner\) \}\}$/,
    );
    const elsewhere = JSON.stringify({ ...workflow, env: {} });
    assert.doesNotMatch(elsewhere, /ghcr\.io|docker\.io|quay\.io|gcr\.io|edgemesh\/edgemesh/);
  });

  it('derives image, chart repository, registry host and version from REGISTRY and the tag', () => {
    const { status, outputs } = names({ REGISTRY: 'ghcr.io/Acme-Edge', GITHUB_REF_NAME: 'v1.2.3' });
    assert.equal(status, 0);
    assert.deepEqual(outputs, {
      host: 'ghcr.io',
      image: 'ghcr.io/acme-edge/edgemesh',
      charts: 'oci://ghcr.io/acme-edge/charts',
      version: '1.2.3',
    });
    const byHand = names({
      REGISTRY: 'registry.example.com:5000/platform',
      GITHUB_REF_NAME: 'main',
      VERSION_INPUT: '2.0.0-rc.1',
    });
    assert.equal(byHand.outputs.image, 'registry.example.com:5000/platform/edgemesh');
    assert.equal(byHand.outputs.version, '2.0.0-rc.1');
    assert.notEqual(
      names({ REGISTRY: 'ghcr.io/acme', GITHUB_REF_NAME: 'main' }).status,
      0,
      'no version, no release',
    );
  });

  it('builds amd64 and arm64 images with buildx, tagged from those names, passing every label argument', () => {
    step((s) => s.uses?.startsWith('docker/setup-buildx-action@'), 'sets up buildx');
    step((s) => s.uses?.startsWith('docker/setup-qemu-action@'), 'sets up QEMU for arm64');
    const build = step((s) => s.uses?.startsWith('docker/build-push-action@'), 'builds and pushes the image');
    assert.deepEqual(String(build.with!.platforms).split(','), ['linux/amd64', 'linux/arm64']);
    assert.equal(build.with!.push, true);
    assert.equal(build.with!.tags, '${{ steps.names.outputs.image }}:${{ steps.names.outputs.version }}');
    const passed = String(build.with!['build-args'])
      .trim()
      .split('\n')
      .map((l) => l.split('=')[0]);
    assert.deepEqual(
      passed.sort(),
      ['REVISION', 'SOURCE', 'VERSION'],
      'licences keep the Dockerfile default',
    );
  });

  it('packages the chart naming that same image, and pushes it to the chart repository', () => {
    const chart = step((s) => s.run?.includes('package-chart.ts'), 'packages the chart');
    assert.equal(chart.env!.IMAGE, '${{ steps.names.outputs.image }}');
    assert.equal(chart.env!.VERSION, '${{ steps.names.outputs.version }}');
    assert.equal(chart.env!.CHARTS, '${{ steps.names.outputs.charts }}');
    assert.match(chart.run!, /package-chart\.ts --image "\$IMAGE" --version "\$VERSION" --out dist\/charts/);
    assert.match(chart.run!, /helm\.ts push "dist\/charts\/edgemesh-\$VERSION\.tgz" "\$CHARTS"/);
  });

  describe('the packaged chart', () => {
    let out: string;
    let tgz: string;
    before(() => {
      out = mkdtempSync(join(tmpdir(), 'edgemesh-release-'));
      tgz = packageChart({ image: 'registry.example.com/acme/edgemesh', version: '1.2.3', out });
    });
    after(() => rmSync(out, { recursive: true, force: true }));
    const show = (what: string) => spawnSync(helm(), ['show', what, tgz], { encoding: 'utf8' }).stdout;

    it('has the version as version and appVersion, and the CRD inside', () => {
      const chart = parse(show('chart')) as { version: string; appVersion: string };
      assert.equal(chart.version, '1.2.3');
      assert.equal(chart.appVersion, '1.2.3');
      assert.equal(objects(show('crds'))[0]?.kind, 'CustomResourceDefinition');
    });

    it('runs operator and agents from the released image by default, its README saying so', () => {
      const rendered = spawnSync(helm(), ['template', 'edgemesh', tgz], { encoding: 'utf8' });
      assert.equal(rendered.status, 0, rendered.stderr);
      const operator = objects(rendered.stdout).find((o) => o.kind === 'Deployment') as unknown as {
        spec: {
          template: { spec: { containers: { image: string; env: { name: string; value?: string }[] }[] } };
        };
      };
      const container = operator.spec.template.spec.containers[0]!;
      assert.equal(container.image, 'registry.example.com/acme/edgemesh:1.2.3');
      assert.equal(
        container.env.find((e) => e.name === 'EDGEMESH_OPERATOR_AGENT_IMAGE')?.value,
        container.image,
      );
      assert.match(
        show('readme'),
        /^\| `image\.repository` \| `"registry\.example\.com\/acme\/edgemesh"` \|/m,
      );
    });

    it('changes nothing else in values.yaml', () => {
      const source = readFileSync(VALUES_FILE, 'utf8');
      const packaged = show('values');
      const differ = source.split('\n').filter((line, i) => line !== packaged.split('\n')[i]);
      assert.deepEqual(differ, ['  repository: edgemesh']);
      assert.throws(() => withImageRepository(source, 'Not A Repository'), /not an image repository/);
      assert.throws(() => packageChart({ image: 'r/e', version: 'v1', out }), /not a SemVer version/);
    });
  });
});
