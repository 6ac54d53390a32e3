import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import {
  ApiextensionsV1Api,
  AppsV1Api,
  CustomObjectsApi,
  KubeConfig,
  type V1CustomResourceDefinition,
} from '@kubernetes/client-node';
import { pino } from 'pino';
import { edgeMeshCrd } from '../operator/src/api/crd.ts';
import { type Operator, startOperator } from '../operator/src/controller.ts';

/** The k3s image; it must already be in the local engine (nothing is pulled in CI here). */
const K3S_IMAGE = process.env.EDGEMESH_E2E_K3S_IMAGE ?? 'rancher/k3s:v1.33.5-k3s1';
/** The agent image the mesh runs (built from the Dockerfile); loaded into k3s by the suite. */
const AGENT_IMAGE = process.env.EDGEMESH_E2E_AGENT_IMAGE;

/** Why this suite cannot run here, or undefined. */
function unavailable(): string | undefined {
  const info = spawnSync('docker', ['info'], { stdio: 'ignore' });
  if (info.error || info.status !== 0) return 'no container engine (docker info failed)';
  const image = spawnSync('docker', ['image', 'inspect', K3S_IMAGE], { stdio: 'ignore' });
  if (image.status !== 0)
    return `the k3s image ${K3S_IMAGE} is not in the local engine and cannot be pulled here`;
  if (!AGENT_IMAGE) return 'EDGEMESH_E2E_AGENT_IMAGE (the agent image to run) is not set';
  return undefined;
}

const why = unavailable();
if (why) console.log(`# k3s e2e skipped: ${why}`);

/**
 * On a real cluster (k3s in a container): install the CRD, run the operator against it, apply an
 * EdgeMesh, and see the DaemonSet roll out and the mesh turn Ready.
 */
describe('EdgeMesh on k3s', { skip: why ?? false }, () => {
  let k3s: { getKubeConfig(): string; stop(): Promise<unknown> };
  let operator: Operator;
  let kc: KubeConfig;

  before(async () => {
    const { K3sContainer } = await import('@testcontainers/k3s');
    k3s = await new K3sContainer(K3S_IMAGE).start();
    kc = new KubeConfig();
    kc.loadFromString(k3s.getKubeConfig());
    await kc
      .makeApiClient(ApiextensionsV1Api)
      .createCustomResourceDefinition({ body: edgeMeshCrd() as unknown as V1CustomResourceDefinition });
    operator = await startOperator(
      kc,
      {
        identity: 'e2e',
        leaseNamespace: 'default',
        leaseName: 'edgemesh-operator',
        leaseDurationMs: 15_000,
        renewDeadlineMs: 10_000,
        retryPeriodMs: 2_000,
        workers: 2,
        resyncMs: 60_000,
        probeHost: '127.0.0.1',
        probePort: 0,
      },
      pino({ level: 'info' }),
    );
  });
  after(async () => {
    await operator?.stop();
    await k3s?.stop();
  });

  it('rolls out the agents of an applied EdgeMesh and reports Ready', async () => {
    const custom = kc.makeApiClient(CustomObjectsApi);
    await custom.createNamespacedCustomObject({
      group: 'edgemesh.p2p.dev',
      version: 'v1alpha1',
      namespace: 'default',
      plural: 'edgemeshes',
      body: {
        apiVersion: 'edgemesh.p2p.dev/v1alpha1',
        kind: 'EdgeMesh',
        metadata: { name: 'e2e' },
        spec: {
          controlPlane: { natsUrl: 'nats://nats.default:4222' },
          agent: { image: AGENT_IMAGE, imagePullPolicy: 'Never' },
          cache: { storage: 'EmptyDir' },
        },
      },
    });
    const apps = kc.makeApiClient(AppsV1Api);
    for (let i = 0; i < 120; i++) {
      const ds = await apps
        .readNamespacedDaemonSet({ name: 'edgemesh-e2e', namespace: 'default' })
        .catch(() => undefined);
      const mesh = (await custom.getNamespacedCustomObject({
        group: 'edgemesh.p2p.dev',
        version: 'v1alpha1',
        namespace: 'default',
        plural: 'edgemeshes',
        name: 'e2e',
      })) as { status?: { conditions?: { type: string; status: string }[] } };
      const ready = mesh.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
      if (ready && (ds?.status?.numberReady ?? 0) > 0) return;
      await new Promise((r) => setTimeout(r, 1000));
    }
    assert.fail('the mesh did not turn Ready in 120 s');
  });
});
