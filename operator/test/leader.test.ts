import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type FakeApiServer, startFakeApiServer } from '../harness/fake-apiserver.ts';
import { OPERATOR_NODE_FLAGS } from '../src/node-flags.ts';
import { eventually, node } from './support.ts';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const LEASE_MS = 3000;
const RETRY_MS = 250;

type PodSpec = {
  containers: { image: string; imagePullPolicy?: string }[];
  imagePullSecrets?: { name: string }[];
};

describe('leader election between two operator processes', () => {
  let api: FakeApiServer;
  let dir: string;
  const procs = new Map<string, ChildProcess>();
  type LeaseSpec = {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
  const lease = () =>
    (
      api.get('leases', 'edgemesh-system', 'edgemesh-operator', 'coordination.k8s.io') as
        { spec?: LeaseSpec } | undefined
    )?.spec;
  const holder = () => lease()?.holderIdentity;
  const start = (identity: string, kubeconfig: string) => {
    const child = spawn(process.execPath, [...OPERATOR_NODE_FLAGS, MAIN], {
      env: {
        ...process.env,
        KUBECONFIG: kubeconfig,
        EDGEMESH_OPERATOR_IDENTITY: identity,
        EDGEMESH_OPERATOR_NAMESPACE: 'edgemesh-system',
        EDGEMESH_OPERATOR_LEASE_DURATION_MS: String(LEASE_MS),
        EDGEMESH_OPERATOR_RENEW_DEADLINE_MS: '2000',
        EDGEMESH_OPERATOR_RETRY_PERIOD_MS: String(RETRY_MS),
        EDGEMESH_OPERATOR_PROBE_HOST: '127.0.0.1',
        EDGEMESH_OPERATOR_PROBE_PORT: '0',
        EDGEMESH_OPERATOR_ISSUER_URL: 'https://edgemesh-operator.edgemesh-system.svc:7443',
        EDGEMESH_OPERATOR_ISSUER_HOST: '127.0.0.1',
        EDGEMESH_OPERATOR_ISSUER_PORT: '0',
        EDGEMESH_OPERATOR_AGENT_IMAGE: 'registry.example/edgemesh:1.2.3',
        EDGEMESH_OPERATOR_AGENT_IMAGE_PULL_POLICY: 'Always',
        EDGEMESH_OPERATOR_IMAGE_PULL_SECRETS: 'regcred, mirror-creds',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    procs.set(identity, child);
    child.stdout.resume();
    return child;
  };
  const createMesh = (name: string) =>
    api.put({
      apiVersion: 'edgemesh.p2p.dev/v1alpha1',
      kind: 'EdgeMesh',
      metadata: { name, namespace: 'shop' },
      spec: { controlPlane: { natsUrl: 'nats://nats:4222' } },
    });

  before(async () => {
    api = await startFakeApiServer();
    api.put(node('edge-0', 'z1', 'r1'));
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-leader-'));
    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(kubeconfig, api.kubeconfig);
    start('op-a', kubeconfig);
    start('op-b', kubeconfig);
  });
  after(async () => {
    for (const child of procs.values()) if (child.exitCode === null) child.kill('SIGKILL');
    await api?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('one leads and reconciles; when it is killed, the other leads once its lease has run out, never before', async () => {
    const first = await eventually(() => holder() || undefined, 20_000);
    createMesh('one');
    const ds = (await eventually(() => api.get('daemonsets', 'shop', 'edgemesh-one'), 20_000)) as unknown as {
      spec: { template: { spec: PodSpec } };
    };
    // The agent image settings, from the environment (main.ts) to the DaemonSet.
    const pod = ds.spec.template.spec;
    assert.equal(pod.containers[0]!.image, 'registry.example/edgemesh:1.2.3');
    assert.equal(pod.containers[0]!.imagePullPolicy, 'Always');
    assert.deepEqual(pod.imagePullSecrets, [{ name: 'regcred' }, { name: 'mirror-creds' }]);
    const other = first === 'op-a' ? 'op-b' : 'op-a';
    const held = lease()!;
    const killedAt = performance.now();
    procs.get(first)!.kill('SIGKILL');
    await eventually(() => holder() === other || undefined, 20_000);
    console.log(
      `# ${other} took the lease ${Math.round(performance.now() - killedAt)} ms after ${first} was killed (lease ${LEASE_MS} ms, retry ${RETRY_MS} ms)`,
    );
    // Safety, from the Lease itself (no clock of this test's): taken over after the last renewal
    // seen before the kill plus the lease duration, and counted as a transition.
    const taken = lease()!;
    const expiry = Date.parse(held.renewTime!) + held.leaseDurationSeconds! * 1000;
    assert.ok(
      Date.parse(taken.acquireTime!) >= expiry,
      `acquired at ${taken.acquireTime}, the lease ran until ${new Date(expiry).toISOString()}`,
    );
    assert.equal(taken.leaseTransitions, (held.leaseTransitions ?? 0) + 1);
    createMesh('two');
    await eventually(() => api.get('daemonsets', 'shop', 'edgemesh-two'), 20_000);
  });

  it('gives the lease back on SIGTERM', async () => {
    const leader = procs.get(holder()!)!;
    leader.kill('SIGTERM');
    const [code] = (await once(leader, 'exit')) as [number];
    assert.equal(code, 0);
    assert.equal(holder(), '', 'released, so a successor need not wait for it to expire');
  });
});
