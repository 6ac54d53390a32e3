import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { verify, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { CHART, helm, objects, template } from '../charts/lib/helm.ts';
import { OPERATOR_NODE_FLAGS } from '../operator/src/node-flags.ts';
import { eventually as poll } from '../operator/test/support.ts';
import {
  type ControlPlane,
  controlPlaneUnavailable,
  type SimulatedNode,
  startControlPlane,
} from './harness/control-plane.ts';
import { grants, needed, type PolicyRule, requestsOf } from './harness/rbac.ts';
import { ROOT } from './harness/images.ts';
import { startAgentProcess } from '../agent/harness/agent-process.ts';
import { revocationSignedBytes, subjects } from '@edgemesh/contracts';
import { connect as natsConnect, credsAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { natsUnavailable, startNatsServer, subscriptionRefusal } from '../agent/harness/nats-server.ts';
import { agentReports } from '../operator/harness/agent-reports.ts';

/** Each poll here runs kubectl, a process of its own: poll at a pace that leaves the CPU to the cluster. */
const eventually = <T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000) =>
  poll(check, timeoutMs, 250);

const why = controlPlaneUnavailable();
if (why) console.log(`# real control plane suite skipped: ${why}`);

const NAMESPACE = 'edgemesh-system';
/** Where op-a serves node-certificate issuance (chosen free at start). */
let ISSUER_PORT = 0;
const freePort = async () => {
  const server = createNetServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
};
const OPERATOR_SA = 'edgemesh-operator';
const OPERATOR_USER = `system:serviceaccount:${NAMESPACE}:${OPERATOR_SA}`;
const MAIN = join(ROOT, 'operator/src/main.ts');
const SAMPLES = ['cdn', 'low-power', 'replicated'] as const;
/** Each sample's mesh (namespace/name) and how many nodes it selects of the six below. */
const MESHES = {
  cdn: ['default', 'cdn', 6],
  'low-power': ['edge', 'field', 6],
  replicated: ['factory', 'store', 3],
} as const;

/**
 * Six nodes in three zones of two regions; one node per zone is a storage node. The last is tainted
 * to keep ordinary workloads off, as edge nodes often are: agents tolerate it by default (the cdn
 * sample), or as their spec says (low-power.yaml tolerates this taint by name).
 */
const NODES: SimulatedNode[] = ['eu-west-1a', 'eu-west-1b', 'us-east-1a'].flatMap((zone, z) =>
  [0, 1].map((i) => ({
    name: `edge-${z * 2 + i}`,
    labels: {
      'topology.kubernetes.io/zone': zone,
      'topology.kubernetes.io/region': zone.slice(0, -1),
      ...(i === 0 ? { 'edgemesh.p2p.dev/storage': 'true' } : { 'edge.example.com/power': 'battery' }),
    },
    ...(z * 2 + i === 5
      ? { taints: [{ key: 'edge.example.com/low-power', value: 'true', effect: 'NoSchedule' as const }] }
      : {}),
  })),
);
/** Namespaces the chart grants the operator Secrets in (meshNamespaces); `restricted` enforces Pod Security's restricted level. */
const MESH_NAMESPACES = ['default', 'edge', 'factory', 'restricted'];

type Mesh = {
  metadata: { generation: number; resourceVersion: string };
  status?: {
    observedGeneration?: number;
    conditions?: { type: string; status: string; reason: string }[];
    zones?: Record<string, number>;
    reportingAgents?: number;
  };
};
/** The agent image the operators run meshes with, unless the chart's Deployment sets one. */
const AGENT_IMAGE = 'registry.example/edgemesh:e2e';
type DaemonSet = {
  metadata: { generation: number };
  spec: {
    selector: { matchLabels: Record<string, string> };
    template: { spec: { containers: { image: string }[] } };
  };
  status: {
    observedGeneration?: number;
    desiredNumberScheduled: number;
    numberReady: number;
    updatedNumberScheduled?: number;
  };
};

/**
 * The chart, the operator and the samples on a real control plane (etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler and kwok's simulated nodes, built from Kubernetes' Go
 * modules by e2e/control-plane/build.sh): nothing here is played by the test.
 */
describe('on a real control plane: helm install, the operator, every sample', { skip: why ?? false }, () => {
  let cp: ControlPlane;
  const operators = new Map<string, { child: ChildProcess; log: string[]; probePort?: number }>();
  /** The suite is over: operators that exit are not started again. */
  let stopping = false;
  /** The agent image the operators were given (the chart's, else AGENT_IMAGE). */
  let agentImage = '';
  const get = <T>(args: string[]) => JSON.parse(cp.kubectl(['get', ...args, '-o', 'json'])) as T;
  const tryGet = <T>(args: string[]): T | undefined => {
    try {
      return get<T>(args);
    } catch (error) {
      if (/NotFound|not found/.test((error as Error).message)) return undefined;
      throw error;
    }
  };
  const mesh = (sample: keyof typeof MESHES) => get<Mesh>(['em', MESHES[sample][1], '-n', MESHES[sample][0]]);
  /** Applies an EdgeMesh `name` in `namespace` with `spec`, as `kubectl apply -f` a manifest does. */
  const applyMesh = (namespace: string, name: string, spec: object) =>
    cp.kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'edgemesh.p2p.dev/v1alpha1',
        kind: 'EdgeMesh',
        metadata: { name, namespace },
        spec,
      }),
    );
  /** Merges `spec` into a mesh's spec, as `kubectl patch --type merge` does. */
  const patchSpec = (sample: keyof typeof MESHES, spec: object) =>
    cp.kubectl([
      ...['patch', 'em', MESHES[sample][1], '-n', MESHES[sample][0]],
      ...['--type', 'merge', '-p', JSON.stringify({ spec })],
    ]);
  const condition = (m: Mesh, type: string) => m.status?.conditions?.find((c) => c.type === type)?.status;
  const reason = (m: Mesh, type: string) => m.status?.conditions?.find((c) => c.type === type)?.reason;
  /**
   * Waits for a mesh's agents to be rolled out and for its Ready condition to say `ready` (with
   * `reason`); on timeout, says what the mesh and its DaemonSet looked like. kwok runs no agent
   * process: the samples' agents never report on the control plane, so they are rolled out and not
   * Ready, for want of reports.
   */
  const waitRolledOut = async (
    namespace: string,
    name: string,
    ready = 'False',
    why = 'OperatorCannotConnect',
  ) => {
    try {
      await eventually(() => {
        const m = get<Mesh>(['em', name, '-n', namespace]);
        return (
          (reason(m, 'Progressing') === 'RolledOut' &&
            condition(m, 'Ready') === ready &&
            reason(m, 'Ready') === why) ||
          undefined
        );
      }, 90_000);
    } catch (error) {
      const state = JSON.stringify({
        mesh: get<Mesh>(['em', name, '-n', namespace]).status,
        daemonSet: tryGet<DaemonSet>(['daemonset', `edgemesh-${name}`, '-n', namespace])?.status,
      });
      throw new Error(`${namespace}/${name} not rolled out with Ready ${ready} (${why}): ${state}`, {
        cause: error,
      });
    }
  };
  const leaseHolder = () =>
    tryGet<{ spec: { holderIdentity?: string } }>(['lease', 'edgemesh-operator', '-n', NAMESPACE])?.spec
      .holderIdentity;

  /** An operator replica as its own process, configured from the chart's Deployment, with the chart's ServiceAccount. */
  const startOperator = async (identity: string, kubeconfig: string, issuerPort = 0) => {
    const deployment = get<{
      spec: { template: { spec: { containers: { env: { name: string; value?: string }[] }[] } } };
    }>(['deployment', 'edgemesh-operator', '-n', NAMESPACE]);
    const chartEnv = Object.fromEntries(
      deployment.spec.template.spec.containers[0]!.env.flatMap((e) =>
        e.value === undefined ? [] : [[e.name, e.value]],
      ),
    );
    agentImage = chartEnv.EDGEMESH_OPERATOR_AGENT_IMAGE ?? AGENT_IMAGE;
    const child = spawn(process.execPath, [...OPERATOR_NODE_FLAGS, MAIN], {
      env: {
        ...process.env,
        EDGEMESH_OPERATOR_AGENT_IMAGE: AGENT_IMAGE,
        ...chartEnv,
        KUBECONFIG: kubeconfig,
        POD_NAME: identity,
        POD_NAMESPACE: NAMESPACE,
        // Faster than the chart's production timing, so that a test waits seconds, not minutes; not
        // so fast that a leader starved of CPU (the suite runs beside a CPU hog too) loses its lease
        // at every turn. One that does exits, and is started again below, as its Deployment would.
        EDGEMESH_OPERATOR_LEASE_DURATION_MS: '6000',
        EDGEMESH_OPERATOR_RENEW_DEADLINE_MS: '4000',
        EDGEMESH_OPERATOR_RETRY_PERIOD_MS: '500',
        EDGEMESH_OPERATOR_RESYNC_MS: '1000',
        EDGEMESH_OPERATOR_PROBE_HOST: '127.0.0.1',
        EDGEMESH_OPERATOR_PROBE_PORT: '0',
        // The issuance endpoint where a test agent on this machine reaches it: both replicas write
        // the same URL into the agents' configuration; the first listens there.
        EDGEMESH_OPERATOR_ISSUER_URL: `https://localhost:${ISSUER_PORT}`,
        EDGEMESH_OPERATOR_ISSUER_HOST: '127.0.0.1',
        EDGEMESH_OPERATOR_ISSUER_PORT: String(issuerPort),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const entry: { child: ChildProcess; log: string[]; probePort?: number } = { child, log: [] };
    for (const stream of [child.stdout, child.stderr])
      stream.on('data', (d: Buffer) => {
        for (const line of d.toString().split('\n').filter(Boolean)) {
          entry.log.push(line);
          const port = /"probePort":(\d+)/.exec(line);
          if (port) entry.probePort = Number(port[1]);
        }
      });
    operators.set(identity, entry);
    // Should this test process die without its after hook, the operators go with it.
    process.once('exit', () => child.kill('SIGKILL'));
    // A replica that lost its lease exits 1 (controller.ts); its Deployment would start it again.
    // Killed by a test (a signal), stopped (0) or crashed (1 without that message), it stays down.
    child.once('exit', (code) => {
      if (code !== 1 || stopping || !entry.log.some((l) => l.includes('lost the lease'))) return;
      console.log(`# ${identity} exited after losing its lease: started again, as its Deployment would`);
      startOperator(identity, kubeconfig, issuerPort).catch((error: unknown) =>
        console.log(`# ${identity} could not be started again: ${String(error)}`),
      );
    });
    await eventually(() => entry.probePort, 30_000);
  };
  const reconciles = async (identity: string) => {
    const text = await (await fetch(`http://127.0.0.1:${operators.get(identity)!.probePort}/metrics`)).text();
    return [...text.matchAll(/^controller_runtime_reconcile_total\{[^}]*\} (\d+)/gm)].reduce(
      (sum, m) => sum + Number(m[1]),
      0,
    );
  };

  before(async () => {
    cp = await startControlPlane({ nodes: NODES, auditGroups: [`system:serviceaccounts:${NAMESPACE}`] });
    console.log(
      `# real control plane: Kubernetes ${cp.versions.kubernetes}, etcd ${cp.versions.etcd}, kwok ${cp.versions.kwok} (built with ${cp.versions.go}); ${NODES.length} simulated nodes`,
    );
    // meshNamespaces must exist before the chart makes the operator's Role in each.
    for (const ns of ['edge', 'factory', 'restricted']) cp.kubectl(['create', 'namespace', ns]);
    cp.kubectl(['label', 'namespace', 'restricted', 'pod-security.kubernetes.io/enforce=restricted']);
    const install = spawnSync(
      helm(),
      [
        ...[
          'install',
          'edgemesh',
          CHART,
          '--kubeconfig',
          cp.kubeconfig,
          '-n',
          NAMESPACE,
          '--create-namespace',
        ],
        ...['--set', 'nats.enabled=true', '--set', `meshNamespaces={${MESH_NAMESPACES.join(',')}}`],
        ...['--wait', '--timeout', '2m'],
      ],
      { encoding: 'utf8', env: cp.toolEnv, timeout: 180_000 },
    );
    assert.equal(install.status, 0, `helm install: ${install.stderr}`);
    const kubeconfig = cp.serviceAccountKubeconfig(NAMESPACE, OPERATOR_SA);
    ISSUER_PORT = await freePort();
    await Promise.all([startOperator('op-a', kubeconfig, ISSUER_PORT), startOperator('op-b', kubeconfig)]);
  });
  after(async () => {
    stopping = true;
    for (const [id, { child, log }] of operators) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      if (process.env.TEST_LOG) console.log(`# ${id}:\n${log.join('\n')}`);
    }
    await cp?.stop();
  });

  it('installs the chart with helm: CRD established, the operator Deployment ready on simulated nodes', async () => {
    const crd = get<{ status: { conditions: { type: string; status: string }[] } }>([
      'crd',
      'edgemeshes.edgemesh.p2p.dev',
    ]);
    assert.equal(crd.status.conditions.find((c) => c.type === 'Established')?.status, 'True');
    const deployment = get<{ status: { readyReplicas?: number } }>([
      'deployment',
      'edgemesh-operator',
      '-n',
      NAMESPACE,
    ]);
    assert.equal(deployment.status.readyReplicas, 2);
    const leader = await eventually(() => leaseHolder() || undefined, 30_000);
    assert.ok(leader === 'op-a' || leader === 'op-b', `one operator process leads (holder ${leader})`);
  });

  it('applies every sample with kubectl; each mesh rolls out its agents on simulated nodes, and is not Ready while they do not report on the control plane', async () => {
    for (const sample of SAMPLES)
      cp.kubectl(['apply', '-f', join(ROOT, 'manifests/samples', `${sample}.yaml`)]);
    // A mesh whose NATS needs credentials, as a user with a secured NATS writes it.
    cp.kubectl(['create', 'secret', 'generic', 'nats-creds', '-n', 'default', '--from-literal=creds=x']);
    applyMesh('default', 'secured', {
      controlPlane: {
        natsUrl: 'nats://edgemesh-nats.edgemesh-system:4222',
        credentialsSecret: 'nats-creds',
      },
      nodeSelector: { 'edgemesh.p2p.dev/storage': 'true' },
      ports: { http: 7580, grpc: 7581 },
    });
    for (const sample of SAMPLES) {
      const [namespace, name, nodes] = MESHES[sample];
      // The operators cannot reach the chart's NATS from this machine (its Service name), and no
      // agent runs to report anyway: the status says so.
      await waitRolledOut(namespace, name);
      const m = get<Mesh>(['em', name, '-n', namespace]);
      assert.equal(condition(m, 'ControlPlaneConnected'), 'False');
      assert.equal(m.status?.reportingAgents, 0);
      const ds = get<DaemonSet>(['daemonset', `edgemesh-${name}`, '-n', namespace]);
      assert.equal(
        ds.spec.template.spec.containers[0]!.image,
        agentImage,
        `${sample}: the operator's agent image`,
      );
      assert.equal(ds.status.desiredNumberScheduled, nodes, `${sample}: one agent per selected node`);
      assert.equal(ds.status.numberReady, nodes);
      const selector = Object.entries(ds.spec.selector.matchLabels)
        .map(([k, v]) => `${k}=${v}`)
        .join(',');
      const pods = get<{
        items: {
          spec: { nodeName?: string; priorityClassName?: string; priority?: number };
          status: { phase: string };
        }[];
      }>(['pods', '-n', namespace, '-l', selector]).items;
      assert.equal(
        new Set(pods.map((p) => p.spec.nodeName)).size,
        nodes,
        `${sample}: agents on ${nodes} distinct nodes`,
      );
      assert.ok(
        pods.every((p) => p.status.phase === 'Running'),
        `${sample}: every agent running`,
      );
      // The chart's PriorityClass, through the operator, resolved by the API server's admission.
      assert.deepEqual(
        [...new Set(pods.map((p) => `${p.spec.priorityClassName}=${p.spec.priority}`))],
        ['edgemesh-agent=100000'],
      );
    }
    assert.deepEqual(mesh('cdn').status?.zones, { 'eu-west-1a': 2, 'eu-west-1b': 2, 'us-east-1a': 2 });
    await waitRolledOut('default', 'secured');
  });

  it('turns a mesh Ready once its agents report on the control plane (signed, as its NATS user)', async (t) => {
    const noNats = natsUnavailable();
    if (noNats) return t.skip(noNats);
    // The chart's NATS as the operator configures it, on this machine, where the operators reach it.
    const conf = get<{ data: Record<string, string> }>(['configmap', 'edgemesh-nats-config', '-n', NAMESPACE])
      .data['nats.conf']!;
    const dir = mkdtempSync(join(tmpdir(), 'edgemesh-cluster-reports-'));
    writeFileSync(join(dir, 'nats.conf'), conf);
    const nats = await startNatsServer(undefined, { config: join(dir, 'nats.conf') });
    let nc: NatsConnection | undefined;
    try {
      applyMesh('default', 'reporting', {
        controlPlane: { natsUrl: nats.url },
        nodeSelector: { 'edgemesh.p2p.dev/storage': 'true' },
        ports: { http: 7590, grpc: 7591 },
      });
      await waitRolledOut('default', 'reporting', 'False', 'AgentsNotReporting');
      const creds = await eventually(
        () =>
          tryGet<{ data: { creds: string } }>(['secret', 'edgemesh-reporting-nats', '-n', 'default'])?.data
            .creds,
      );
      nc = await natsConnect({
        servers: nats.url,
        authenticator: credsAuthenticator(Buffer.from(creds, 'base64')),
      });
      const report = await agentReports({
        secret: (namespace, name) => Promise.resolve(tryGet<object>(['secret', name, '-n', namespace])),
        nats: nc,
        namespace: 'default',
        name: 'reporting',
        nodes: NODES.filter((n) => n.labels?.['edgemesh.p2p.dev/storage']).map((n) => n.name),
      });
      await eventually(async () => {
        await report();
        return condition(get<Mesh>(['em', 'reporting', '-n', 'default']), 'Ready') === 'True' || undefined;
      }, 60_000);
      const m = get<Mesh>(['em', 'reporting', '-n', 'default']);
      assert.equal(m.status?.reportingAgents, 3);
      assert.equal(reason(m, 'ControlPlaneConnected'), 'AgentsReporting');
      const out = cp.kubectl(['get', 'em', 'reporting', '-n', 'default']);
      assert.match(out, /\nreporting\s+True\s+3\s+3\s+3\s+/, out);
    } finally {
      await nc?.close();
      cp.kubectl(['delete', 'em', 'reporting', '-n', 'default', '--wait=false']);
      await nats.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('issues node certificates through its endpoint (an agent pod gets one for its own node, no other; a pod that is not the agent none; none once revoked); its agents take their clients’ ServiceAccount tokens', async () => {
    const [namespace, name] = MESHES.cdn;
    const ds = get<{
      spec: { template: { spec: { volumes: { name: string; projected?: unknown }[] } } };
    }>(['daemonset', `edgemesh-${name}`, '-n', namespace]);
    const tokenVolume = ds.spec.template.spec.volumes.find((v) => v.name === 'identity-token');
    assert.deepEqual(tokenVolume?.projected, {
      defaultMode: 420,
      sources: [
        { serviceAccountToken: { audience: 'edgemesh.p2p.dev', expirationSeconds: 3600, path: 'token' } },
      ],
    });
    const secret = get<{ metadata: { ownerReferences: { kind: string; name: string }[] } }>([
      'secret',
      `edgemesh-${name}-ca`,
      '-n',
      namespace,
    ]);
    assert.deepEqual(
      secret.metadata.ownerReferences.map((o) => `${o.kind}/${o.name}`),
      [`EdgeMesh/${name}`],
      'the mesh CA goes with the mesh',
    );
    // What the kubelet would mount in the agent's pod: the trust ConfigMap and a pod-bound token.
    const trustData = () =>
      get<{ data: Record<string, string> }>(['configmap', `edgemesh-${name}-trust`, '-n', namespace]).data;
    const trust = trustData();
    const dir = mkdtempSync(join(tmpdir(), 'edgemesh-agent-identity-'));
    try {
      writeFileSync(join(dir, 'ca.crt'), trust['ca.crt']!);
      writeFileSync(join(dir, 'issuer.crt'), trust['issuer.crt']!);
      /** Writes the token file the kubelet would project into the mesh's agent pod on `node`. */
      const agentTokenOn = (node: string) => {
        const pod = get<{ items: { metadata: { name: string }; spec: { nodeName: string } }[] }>([
          'pods',
          '-n',
          namespace,
          '-l',
          `edgemesh.p2p.dev/mesh=${name}`,
        ]).items.find((p) => p.spec.nodeName === node)!;
        writeFileSync(
          join(dir, 'token'),
          cp.kubectl([
            ...['create', 'token', `edgemesh-${name}`, '-n', namespace, '--audience', 'edgemesh.p2p.dev'],
            ...['--bound-object-kind', 'Pod', '--bound-object-name', pod.metadata.name],
          ]),
        );
      };
      agentTokenOn('edge-0');
      const args = (node: string) => [
        ...['--node-id', node, '--mesh', `${namespace}_${name}`, '--store.dir', join(dir, node)],
        ...['--security.issuer.url', `https://localhost:${ISSUER_PORT}`],
        ...[
          '--security.issuer.token-file',
          join(dir, 'token'),
          '--security.issuer.ca-file',
          join(dir, 'issuer.crt'),
        ],
        ...['--security.issuer.namespace', namespace, '--security.issuer.name', name],
        ...['--security.trust-bundle-file', join(dir, 'ca.crt')],
      ];
      // The agent of edge-0, as a real process: its certificate comes from the operator.
      // Its clients, as the operator configures them: the cluster's token keys (jwks.json) and the
      // mesh's rules (by default: the ServiceAccounts of its namespace).
      writeFileSync(join(dir, 'jwks.json'), trust['jwks.json']!);
      const agentYaml = parseYaml(
        get<{ data: Record<string, string> }>(['configmap', `edgemesh-${name}`, '-n', namespace]).data[
          'agent.yaml'
        ]!,
      ) as { access: { serviceAccounts: { issuer: string; jwksFile: string }; rules: unknown[] } };
      const access = agentYaml.access;
      access.serviceAccounts.jwksFile = join(dir, 'jwks.json');
      writeFileSync(join(dir, 'access.yaml'), JSON.stringify({ access }));
      const agent = await startAgentProcess(
        [...args('edge-0'), '--config', join(dir, 'access.yaml'), '--access.anonymous', 'none'],
        // Its certificate takes the issuer's TokenReview on the real API server: on a loaded machine
        // (or while the issuing replica is started again) that may take a few of its retries.
        90_000,
      );
      try {
        assert.ok(
          agent.logs.some((l) => l.includes('"node certificate issued"') && l.includes(`"name":"${name}"`)),
          'issued for the mesh',
        );
        const clientToken = (ns: string, audience = 'edgemesh.p2p.dev') =>
          cp.kubectl(['create', 'token', 'default', '-n', ns, '--audience', audience]).trim();
        const put = async (token: string) =>
          (
            await fetch(`${agent.url}/v1/objects/e2e/doc`, {
              method: 'PUT',
              body: 'x',
              headers: { Authorization: `Bearer ${token}` },
            })
          ).status;
        assert.equal(await put(clientToken(namespace)), 201, 'a workload of the mesh’s namespace writes');
        assert.equal(await put(clientToken('edge')), 403, 'a workload of another namespace may not');
        assert.equal(
          await put(clientToken(namespace, 'https://kubernetes.default.svc')),
          401,
          'a token for the API server is no client token',
        );
        assert.equal((await fetch(`${agent.url}/v1/objects/e2e/doc`)).status, 403, 'anonymous: nothing');
      } finally {
        await agent.stop();
      }
      /** Starts an agent process for `node` and waits for the issuer's first refusal (it keeps asking, never ready). */
      const refusalFor = async (node: string): Promise<string> => {
        const agent = spawn(process.execPath, [join(ROOT, 'agent/src/main.ts'), ...args(node)], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        try {
          const lines = createInterface({ input: agent.stdout });
          return await new Promise<string>((resolve, reject) => {
            lines.on('line', (line) => {
              if (line.includes('no node certificate yet')) resolve(line);
              if (line.includes('"agent ready"')) reject(new Error(`${node}'s agent got a certificate`));
            });
            agent.once('exit', (code) => reject(new Error(`the agent exited (${code})`)));
          });
        } finally {
          agent.kill('SIGKILL');
        }
      };
      // The same token, for another node: refused.
      assert.match(await refusalFor('edge-1'), /403: NodeMismatch/);
      // Pods that are not the mesh's agent, on edge-1: one with another ServiceAccount, and one with
      // the agents' own ServiceAccount that the DaemonSet did not make. Neither gets a certificate.
      for (const [pod, serviceAccount] of [
        ['intruder', 'default'],
        ['impostor', `edgemesh-${name}`],
      ] as const) {
        cp.kubectl([
          ...['run', pod, '-n', namespace, '--image', 'example.invalid/none', '--restart', 'Never'],
          ...[
            '--overrides',
            JSON.stringify({ spec: { nodeName: 'edge-1', serviceAccountName: serviceAccount } }),
          ],
        ]);
        await eventually(
          () =>
            get<{ status: { phase?: string } }>(['pod', pod, '-n', namespace]).status.phase === 'Running' ||
            undefined,
          30_000,
        );
        writeFileSync(
          join(dir, 'token'),
          cp.kubectl([
            ...['create', 'token', serviceAccount, '-n', namespace, '--audience', 'edgemesh.p2p.dev'],
            ...['--bound-object-kind', 'Pod', '--bound-object-name', pod],
          ]),
        );
        assert.match(await refusalFor('edge-1'), /403: NotTheAgent/, pod);
        cp.kubectl(['delete', 'pod', pod, '-n', namespace, '--wait=false']);
      }
      // Revoke edge-1: the trust ConfigMap carries the list, signed by the mesh CA, and edge-1's own
      // agent (its own pod's token) gets no certificate any more.
      cp.kubectl([
        ...['patch', 'em', name, '-n', namespace, '--type', 'merge'],
        ...['-p', JSON.stringify({ spec: { security: { revokedNodes: ['edge-1'] } } })],
      ]);
      const list = await eventually(() => {
        const data = trustData();
        const parsed = JSON.parse(data['revoked.json'] ?? '{}') as {
          nodes?: string[];
          issuedAtMs: number;
          signature: string;
        };
        return parsed.nodes?.includes('edge-1') ? parsed : undefined;
      }, 30_000);
      assert.ok(
        verify(
          'sha256',
          revocationSignedBytes(`${namespace}_${name}`, list.nodes!, list.issuedAtMs),
          new X509Certificate(trust['ca.crt']!).publicKey,
          Buffer.from(list.signature, 'base64'),
        ),
        'signed by the mesh CA',
      );
      agentTokenOn('edge-1');
      assert.match(await refusalFor('edge-1'), /403: Revoked/);
      cp.kubectl([
        ...['patch', 'em', name, '-n', namespace, '--type', 'merge'],
        ...['-p', JSON.stringify({ spec: { security: { revokedNodes: null } } })],
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives each mesh a NATS user of its own, which the bundled NATS, as the operator configures it, lets reach its own subjects only', async (t) => {
    const noNats = natsUnavailable();
    if (noNats) return t.skip(noNats);
    // The configuration the chart's NATS mounts, and each mesh's user, as the operator wrote them.
    const conf = get<{ data: Record<string, string> }>(['configmap', 'edgemesh-nats-config', '-n', NAMESPACE])
      .data['nats.conf']!;
    const natsTls = get<{ data: Record<string, string> }>([
      'secret',
      'edgemesh-nats-tls',
      '-n',
      NAMESPACE,
    ]).data;
    const user = (sample: keyof typeof MESHES) => {
      const [namespace, name] = MESHES[sample];
      const secret = get<{
        data: { creds: string; 'ca.crt'?: string };
        metadata: { ownerReferences: { kind: string; name: string }[] };
      }>(['secret', `edgemesh-${name}-nats`, '-n', namespace]);
      assert.deepEqual(
        secret.metadata.ownerReferences.map((o) => `${o.kind}/${o.name}`),
        [`EdgeMesh/${name}`],
      );
      const ds = get<{ spec: { template: { spec: { volumes: { name: string; secret?: unknown }[] } } } }>([
        'daemonset',
        `edgemesh-${name}`,
        '-n',
        namespace,
      ]);
      assert.deepEqual(ds.spec.template.spec.volumes.find((v) => v.name === 'nats-credentials')?.secret, {
        secretName: `edgemesh-${name}-nats`,
        defaultMode: 420,
      });
      // The bundled NATS serves TLS; the agents check it by its certificate, given with their user.
      assert.equal(secret.data['ca.crt'], natsTls['tls.crt'], 'the bundled NATS’s certificate');
      return { id: `${namespace}_${name}`, creds: Buffer.from(secret.data.creds, 'base64') };
    };
    const cdn = user('cdn');
    const field = user('low-power');
    const dir = mkdtempSync(join(tmpdir(), 'edgemesh-cluster-nats-'));
    writeFileSync(join(dir, 'nats.conf'), conf);
    const nats = await startNatsServer(undefined, { config: join(dir, 'nats.conf') });
    const open = await Promise.all(
      [cdn, field].map((u) => natsConnect({ servers: nats.url, authenticator: credsAuthenticator(u.creds) })),
    );
    try {
      const [asCdn, asField] = open as [NatsConnection, NatsConnection];
      assert.equal(await subscriptionRefusal(asCdn, subjects(cdn.id).all), undefined, 'its own subjects');
      assert.match(
        String(await subscriptionRefusal(asCdn, subjects(field.id).all)),
        /permissions violation/i,
      );
      assert.match(
        String(await subscriptionRefusal(asField, subjects(cdn.id).all)),
        /permissions violation/i,
      );
      await assert.rejects(natsConnect({ servers: nats.url, reconnect: false }), /Authorization Violation/);
    } finally {
      await Promise.all(open.map((nc) => nc.close()));
      await nats.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('kubectl get em prints the printer columns, and -o wide why a mesh is not Ready', () => {
    const out = cp.kubectl(['get', 'em', '-A']);
    const [header, ...rows] = out.trim().split('\n');
    assert.match(header!, /^NAMESPACE\s+NAME\s+READY\s+NODES\s+READY AGENTS\s+REPORTING\s+HIT RATIO\s+AGE$/);
    assert.ok(
      rows.some((r) => /^default\s+cdn\s+False\s+6\s+6\s+0\s+/.test(r)),
      `a row for cdn with Ready False, 6 of 6 agents ready, none reporting:\n${out}`,
    );
    assert.ok(
      rows.some((r) => /^factory\s+store\s+False\s+3\s+3\s+0\s+/.test(r)),
      out,
    );
    const wide = cp.kubectl(['get', 'em', 'cdn', '-n', 'default', '-o', 'wide']);
    assert.match(wide.split('\n')[0]!, /\s+REASON\s+MESSAGE$/, wide);
    assert.match(wide, /OperatorCannotConnect\s+the operator cannot connect to NATS/, wide);
  });

  it('kubectl explain explains the fields, from the descriptions in the CRD', () => {
    const explained = cp.kubectl(['explain', 'em.spec.agent.image']);
    assert.match(explained, /The agent image for this mesh only/, explained);
    assert.match(cp.kubectl(['explain', 'em.status.reportingAgents']), /reported on the control plane/);
  });

  it('admits the agents of an EmptyDir mesh where Pod Security enforces restricted, and refuses those of a HostPath mesh', async () => {
    const apply = (name: string, spec: object) =>
      applyMesh('restricted', name, {
        controlPlane: { natsUrl: 'nats://edgemesh-nats.edgemesh-system:4222' },
        nodeSelector: { 'edgemesh.p2p.dev/storage': 'true' },
        ...spec,
      });
    type Pods = { items: { status: { phase: string } }[] };
    const podsOf = (mesh: string) =>
      get<Pods>(['pods', '-n', 'restricted', '-l', `edgemesh.p2p.dev/mesh=${mesh}`]).items;
    try {
      apply('lean', { cache: { storage: 'EmptyDir' } });
      await waitRolledOut('restricted', 'lean');
      assert.deepEqual(
        podsOf('lean').map((p) => p.status.phase),
        ['Running', 'Running', 'Running'],
      );
      apply('hostpath', { cache: { storage: 'HostPath' } });
      const refusal = await eventually(
        () =>
          get<{ items: { reason: string; message: string; involvedObject: { name: string } }[] }>([
            'events',
            '-n',
            'restricted',
          ]).items.find((e) => e.involvedObject.name === 'edgemesh-hostpath' && e.reason === 'FailedCreate'),
        60_000,
      );
      assert.match(refusal.message, /violates PodSecurity "restricted:latest".*hostPath/);
      assert.deepEqual(podsOf('hostpath'), [], 'no HostPath agent admitted');
    } finally {
      cp.kubectl([
        'delete',
        'em',
        'lean',
        'hostpath',
        '-n',
        'restricted',
        '--ignore-not-found',
        '--wait=false',
      ]);
    }
  });

  it('reports a mesh outside meshNamespaces as Degraded (NamespaceNotGranted): the operator may not touch its Secrets', async () => {
    cp.kubectl(['create', 'namespace', 'elsewhere']);
    try {
      applyMesh('elsewhere', 'stray', {
        controlPlane: { natsUrl: 'nats://edgemesh-nats.edgemesh-system:4222' },
      });
      await eventually(() => {
        const m = get<Mesh>(['em', 'stray', '-n', 'elsewhere']);
        return (
          (condition(m, 'Degraded') === 'True' && reason(m, 'Degraded') === 'NamespaceNotGranted') ||
          undefined
        );
      }, 60_000);
      assert.equal(
        tryGet(['daemonset', 'edgemesh-stray', '-n', 'elsewhere']),
        undefined,
        'nothing runs there',
      );
    } finally {
      cp.kubectl(['delete', 'em', 'stray', '-n', 'elsewhere', '--ignore-not-found', '--wait=false']);
    }
  });

  it("fences each mesh's agents with a NetworkPolicy, deleted when the mesh turns it off", async () => {
    type Policy = { spec: { ingress: { ports: { port: number }[] }[] } };
    const policy = await eventually(() => tryGet<Policy>(['networkpolicy', 'edgemesh-field', '-n', 'edge']));
    assert.deepEqual(
      policy.spec.ingress.map((r) => r.ports.map((p) => p.port)),
      [[7482], [7483]],
      'the HTTP port (from workloads), the peer port (from agents): the sample low-power.yaml’s',
    );
    patchSpec('low-power', { networkPolicy: { enabled: false } });
    await eventually(
      () => tryGet(['networkpolicy', 'edgemesh-field', '-n', 'edge']) === undefined || undefined,
      30_000,
    );
  });

  it('leaves an unchanged status alone: resyncs write nothing (no status churn)', async () => {
    const leader = leaseHolder()!;
    const statusWrites = () =>
      requestsOf(cp.auditEvents(), OPERATOR_USER)
        .filter((e) => e.objectRef?.resource === 'edgemeshes' && e.objectRef.subresource === 'status')
        .map((e) => `${e.objectRef!.namespace}/${e.objectRef!.name}`);
    // Four meshes resynced every second: `rounds` rounds' worth of reconciles.
    const resyncs = async (rounds: number) => {
      const start = await reconciles(leader);
      await eventually(
        async () => (await reconciles(leader)) >= start + 4 * rounds || undefined,
        60_000,
      ).catch((error: Error) => assert.fail(`the leader's reconciles stalled: ${error.message}`));
    };
    // The meshes settle first: the test before changed a spec, and that change's last status write
    // (its generation, its conditions) can come a round or two later on a loaded machine. Churn in
    // every round never settles; this says so. Then six rounds are counted, so churn that recurs
    // within six rounds fails too.
    type Listed = {
      metadata: { generation: number; deletionTimestamp?: string };
      status?: { observedGeneration?: number };
    };
    await eventually(
      () =>
        get<{ items: Listed[] }>(['edgemesh', '-A']).items.every(
          (m) => !m.metadata.deletionTimestamp && m.status?.observedGeneration === m.metadata.generation,
        ) || undefined,
      60_000,
    );
    let before = statusWrites().length;
    await eventually(async () => {
      await resyncs(1);
      const now = statusWrites().length;
      const quiet = now === before;
      before = now;
      return quiet || undefined;
    }, 60_000).catch((error: Error) => {
      if (error.message.startsWith('not true within'))
        assert.fail(`status written in every round of resyncs: ${statusWrites().slice(-8).join(', ')}`);
      throw error;
    });
    await resyncs(6);
    const written = statusWrites().slice(before);
    assert.deepEqual(written, [], 'status writes during resyncs of unchanged meshes');
  });

  it('rolls the DaemonSet when the spec changes, and records the generation it saw', async () => {
    const before = get<DaemonSet>(['daemonset', 'edgemesh-cdn', '-n', 'default']);
    patchSpec('cdn', { cache: { memory: '128Mi' } });
    const generation = mesh('cdn').metadata.generation;
    await eventually(() => {
      const ds = get<DaemonSet>(['daemonset', 'edgemesh-cdn', '-n', 'default']);
      const s = ds.status;
      return (
        (ds.metadata.generation > before.metadata.generation &&
          (s.observedGeneration ?? 0) >= ds.metadata.generation &&
          s.updatedNumberScheduled === s.desiredNumberScheduled &&
          s.numberReady === s.desiredNumberScheduled) ||
        undefined
      );
    }, 90_000);
    await eventually(() => {
      const m = mesh('cdn');
      return (
        (m.status?.observedGeneration === generation && reason(m, 'Progressing') === 'RolledOut') || undefined
      );
    }, 60_000);
  });

  it('elects one leader on a real Lease; when it is killed the other takes over and reconciles', async () => {
    const first = leaseHolder()!;
    const other = first === 'op-a' ? 'op-b' : 'op-a';
    assert.ok((await reconciles(first)) > 0, 'the leader reconciles');
    assert.equal(await reconciles(other), 0, 'the standby has reconciled nothing');
    operators.get(first)!.child.kill('SIGKILL');
    await eventually(() => leaseHolder() === other || undefined, 30_000);
    const before = get<DaemonSet>(['daemonset', 'edgemesh-field', '-n', 'edge']).metadata.generation;
    patchSpec('low-power', { agent: { logLevel: 'info' } });
    await eventually(
      () =>
        get<DaemonSet>(['daemonset', 'edgemesh-field', '-n', 'edge']).metadata.generation > before ||
        undefined,
      30_000,
    );
    const survivor = operators.get(other)!.child;
    survivor.kill('SIGTERM');
    const [code] = (await once(survivor, 'exit')) as [number];
    assert.equal(code, 0);
    assert.equal(leaseHolder() ?? '', '', 'the lease is released on SIGTERM');
  });

  it('deleting a mesh lets the real garbage collector remove everything it owned', async () => {
    cp.kubectl(['delete', 'em', 'store', '-n', 'factory', '--wait=true']);
    for (const kind of ['daemonset', 'service', 'configmap', 'serviceaccount', 'networkpolicy'])
      await eventually(
        () => tryGet([kind, 'edgemesh-store', '-n', 'factory']) === undefined || undefined,
        60_000,
      );
    await eventually(
      () => get<{ items: unknown[] }>(['pods', '-n', 'factory']).items.length === 0 || undefined,
      60_000,
    );
  });

  it("the chart's RBAC is enough and no more: every request allowed, every granted rule used", () => {
    const requests = requestsOf(cp.auditEvents(), OPERATOR_USER);
    assert.ok(requests.length > 50, `the operator's requests were audited (${requests.length})`);
    const refused = requests.filter((e) => e.responseStatus?.code === 403);
    // Secrets outside meshNamespaces are refused: that is the point (a mesh there is Degraded).
    const elsewhere = (e: (typeof refused)[number]) =>
      e.objectRef?.resource === 'secrets' && e.objectRef.namespace === 'elsewhere';
    assert.ok(refused.some(elsewhere), 'Secrets outside meshNamespaces were asked for, and refused');
    const denied = refused.filter((e) => !elsewhere(e)).map((e) => `${e.verb} ${e.requestURI}`);
    assert.deepEqual([...new Set(denied)], [], 'requests the API server refused (403)');

    const chart = objects(template());
    const rulesOf = (kind: string, name: string) =>
      (chart.find((o) => o.kind === kind && o.metadata.name === name) as unknown as { rules: PolicyRule[] })
        .rules;
    const granted = new Set(
      grants([
        ...rulesOf('ClusterRole', 'edgemesh-operator'),
        ...rulesOf('Role', 'edgemesh-leader-election'),
        ...rulesOf('Role', 'edgemesh-operator'),
      ]),
    );
    const used = new Set(requests.filter((e) => e.responseStatus?.code !== 403).flatMap(needed));
    assert.deepEqual(
      [...used].filter((g) => !granted.has(g)),
      [],
      'requests no rule grants',
    );
    // Asked for by admission (OwnerReferencesPermissionEnforcement, on in this control plane), not by
    // a request: without it every child's apply above would have been refused.
    const byAdmission = new Set(['edgemesh.p2p.dev/edgemeshes/finalizers:update']);
    assert.deepEqual(
      [...granted].filter((g) => !used.has(g) && !byAdmission.has(g)).sort(),
      [],
      'granted and never used',
    );
    // No Secret request left a granted namespace: the Roles are where the operator works.
    const secretNamespaces = new Set(
      requests.filter((e) => e.objectRef?.resource === 'secrets').map((e) => e.objectRef?.namespace),
    );
    assert.deepEqual(
      [...secretNamespaces].filter(
        (ns) => ns !== NAMESPACE && !MESH_NAMESPACES.includes(ns ?? '') && ns !== 'elsewhere',
      ),
      [],
    );
  });
});
