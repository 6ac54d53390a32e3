import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AppsV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { CHART, helm } from '../charts/lib/helm.ts';
import {
  buildEdgeMeshImage,
  buildNatsImage,
  containersUnavailable,
  EDGEMESH_IMAGE,
  ensureBaseImages,
  hasImage,
  NATS_IMAGE,
  ROOT,
  useLocalEngine,
} from './harness/images.ts';

useLocalEngine();
/** The k3s image; it must already be in the local engine (nothing is pulled in CI here). */
const K3S_IMAGE = process.env.EDGEMESH_E2E_K3S_IMAGE ?? 'rancher/k3s:v1.33.5-k3s1';
const NAMESPACE = 'edgemesh-system';

/** Why this suite cannot run here, or undefined. */
function unavailable(): string | undefined {
  const engine = containersUnavailable();
  if (engine) return engine;
  if (!hasImage(K3S_IMAGE))
    return `the k3s image ${K3S_IMAGE} is not in the local engine and cannot be pulled here (set EDGEMESH_E2E_K3S_IMAGE to one that is)`;
  return undefined;
}

const why = unavailable();
if (why) console.log(`# k3s e2e skipped: ${why}`);

const run = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || String(r.error)}`);
  return r.stdout;
};

/**
 * The chart on a real cluster (k3s in a container): the image built from the Dockerfile is loaded
 * into k3s, `helm install` puts in the CRD, the operator (2 replicas) and NATS, and the CDN sample
 * from manifests/samples turns Ready with its agent running.
 */
describe('the chart on k3s (helm install, a sample mesh)', { skip: why ?? false }, () => {
  let k3s: { getKubeConfig(): string; getId(): string; stop(): Promise<unknown> };
  let kc: KubeConfig;
  let dir: string;
  let kubeconfig: string;

  before(async () => {
    ensureBaseImages();
    await buildEdgeMeshImage(EDGEMESH_IMAGE);
    await buildNatsImage(NATS_IMAGE);
    const { K3sContainer } = await import('@testcontainers/k3s');
    k3s = await new K3sContainer(K3S_IMAGE).start();
    // Nothing can be pulled: hand both images to k3s' containerd.
    for (const image of [EDGEMESH_IMAGE, NATS_IMAGE])
      run('sh', ['-c', `docker save ${image} | docker exec -i ${k3s.getId()} ctr -n k8s.io images import -`]);
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-k3s-'));
    kubeconfig = join(dir, 'kubeconfig');
    await writeFile(kubeconfig, k3s.getKubeConfig());
    kc = new KubeConfig();
    kc.loadFromString(k3s.getKubeConfig());
  });
  after(async () => {
    await k3s?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('installs with helm, and the CDN sample mesh turns Ready with its agent running', async () => {
    const [repository, tag] = EDGEMESH_IMAGE.split(':') as [string, string];
    const [natsRepository, natsTag] = NATS_IMAGE.split(':') as [string, string];
    run(helm(), [
      ...['install', 'edgemesh', CHART, '--kubeconfig', kubeconfig, '-n', NAMESPACE, '--create-namespace'],
      ...['--set', `image.repository=${repository}`, '--set', `image.tag=${tag}`],
      ...[
        '--set',
        'image.pullPolicy=Never',
        '--set',
        'nats.enabled=true',
        '--set',
        'meshNamespaces={default}',
      ],
      ...['--set', `nats.image.repository=${natsRepository}`, '--set', `nats.image.tag=${natsTag}`],
      ...['--set', 'nats.image.pullPolicy=Never', '--wait', '--timeout', '3m'],
    ]);
    const apps = kc.makeApiClient(AppsV1Api);
    const operator = await apps.readNamespacedDeployment({ name: 'edgemesh-operator', namespace: NAMESPACE });
    assert.equal(operator.status?.readyReplicas, 2, 'both operator replicas ready');

    // The sample as shipped, with the local image (nothing can be pulled) and an emptyDir cache.
    const sample = parseYaml(await readFile(join(ROOT, 'manifests/samples/cdn.yaml'), 'utf8')) as {
      metadata: { name: string; namespace: string };
      spec: Record<string, unknown>;
    };
    sample.spec.agent = { image: EDGEMESH_IMAGE, imagePullPolicy: 'Never' };
    sample.spec.cache = { ...(sample.spec.cache as object), storage: 'EmptyDir' };
    const custom = kc.makeApiClient(CustomObjectsApi);
    const target = { group: 'edgemesh.p2p.dev', version: 'v1alpha1', plural: 'edgemeshes' };
    await custom.createNamespacedCustomObject({
      ...target,
      namespace: sample.metadata.namespace,
      body: sample,
    });
    for (let i = 0; i < 180; i++) {
      const mesh = (await custom.getNamespacedCustomObject({
        ...target,
        namespace: sample.metadata.namespace,
        name: sample.metadata.name,
      })) as { status?: { conditions?: { type: string; status: string }[]; agents?: { ready?: number } } };
      const ds = await apps
        .readNamespacedDaemonSet({
          name: `edgemesh-${sample.metadata.name}`,
          namespace: sample.metadata.namespace,
        })
        .catch(() => undefined);
      const ready = mesh.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
      if (ready && (ds?.status?.numberReady ?? 0) > 0) return;
      await new Promise((r) => setTimeout(r, 1000));
    }
    assert.fail('the sample mesh did not turn Ready in 180 s');
  });
});
