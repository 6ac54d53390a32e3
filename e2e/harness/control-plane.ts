import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { request } from 'node:https';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePki, type Pki } from './pki.ts';

const BUILD = join(import.meta.dirname, '..', 'control-plane', 'build.sh');

/** A simulated node: kwok keeps it Ready and runs the pods scheduled on it. */
export interface SimulatedNode {
  name: string;
  labels?: Record<string, string>;
  taints?: { key: string; value?: string; effect: 'NoSchedule' | 'PreferNoSchedule' | 'NoExecute' }[];
}

export interface ControlPlaneOptions {
  nodes: SimulatedNode[];
  /**
   * kube-controller-manager's controllers (its --controllers list); false runs none. The default
   * is what a mesh needs: DaemonSets, Deployments, ReplicaSets, garbage collection, namespaces,
   * service accounts, the root CA ConfigMap and node lifecycle.
   */
  controllers?: string[] | false;
  /** Audit (level Metadata) every request of users in these groups, e.g. a namespace's service accounts. */
  auditGroups?: string[];
  /**
   * Files to apply before the controllers start (CRDs): the garbage collector then knows their
   * kinds at once, where a CRD added later is found at its next discovery, up to 30 s on.
   */
  apply?: string[];
}

/** One audit.k8s.io/v1 Event, the fields the tests read. */
export interface AuditEvent {
  stage: string;
  verb: string;
  requestURI: string;
  user: { username: string; groups?: string[] };
  objectRef?: {
    resource?: string;
    subresource?: string;
    namespace?: string;
    name?: string;
    apiGroup?: string;
  };
  responseStatus?: { code?: number };
}

export interface ControlPlane {
  /** Versions of what runs, from the build's stamp (kubernetes, etcd, kwok, go). */
  readonly versions: Record<string, string>;
  /** An admin (system:masters) kubeconfig file and its text. */
  readonly kubeconfig: string;
  readonly kubeconfigText: string;
  /** Each running component's process id, by binary name. */
  readonly pids: Record<string, number>;
  /** A call of the built kubectl as admin (throws with its stderr on failure). */
  kubectl(args: string[], input?: string): string;
  /** The environment for kubectl and helm: their caches inside the control plane's directory. */
  readonly toolEnv: NodeJS.ProcessEnv;
  /** A kubeconfig for a ServiceAccount, with a token from the TokenRequest API (`kubectl create token`). */
  serviceAccountKubeconfig(namespace: string, name: string, expirationSeconds?: number): string;
  /** The audit log so far (see auditGroups). */
  auditEvents(): AuditEvent[];
  stop(): Promise<void>;
}

/**
 * Why the real control plane cannot run here, or undefined. Builds the binaries when they are not
 * in the per-machine cache yet (about 5 minutes on 2 cores the first time; progress on stderr).
 */
export function controlPlaneUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'the test control plane is built for Linux only';
  if (spawnSync('openssl', ['version']).status !== 0)
    return 'openssl is not installed (apt-get install openssl): it makes the control plane certificates';
  const check = spawnSync('bash', [BUILD, '--check'], { encoding: 'utf8' });
  if (check.error || check.status !== 0)
    return (check.stderr || String(check.error)).trim() || 'e2e/control-plane/build.sh --check failed';
  return binDir().error;
}

let built: { dir?: string; error?: string } | undefined;
function binDir(): { dir?: string; error?: string } {
  if (built) return built;
  const r = spawnSync('bash', [BUILD], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const dir = r.stdout?.trim().split('\n').pop();
  built =
    r.status === 0 && dir && existsSync(join(dir, '.complete'))
      ? { dir }
      : { error: `building the control plane failed (exit ${r.status}); run e2e/control-plane/build.sh` };
  return built;
}

/** `n` distinct free loopback ports: all are held open until every one is picked. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Server>((resolve, reject) => {
          const server = createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

function kubeconfigFor(server: string, ca: string, user: Record<string, string>): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'test', cluster: { server, 'certificate-authority': ca } }],
    users: [{ name: 'user', user }],
    contexts: [{ name: 'test', context: { cluster: 'test', user: 'user' } }],
    'current-context': 'test',
  });
}

/**
 * Starts a real control plane from the built binaries, configured as envtest configures its API
 * server (secure port only, client-certificate admin, RBAC, a service-account issuer and keys),
 * plus kube-controller-manager, kube-scheduler and kwok with the given simulated nodes, all on
 * loopback in one temporary directory. stop() ends every process and removes the directory; so
 * does this process exiting or being signalled. A test cluster: etcd serves plain HTTP without
 * authentication on loopback, and kwok is an admin.
 */
export async function startControlPlane(options: ControlPlaneOptions): Promise<ControlPlane> {
  const { dir: bin, error } = binDir();
  if (!bin) throw new Error(error);
  const versions = Object.fromEntries(
    readFileSync(join(bin, '.complete'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split('=') as [string, string]),
  );
  const dir = mkdtempSync(join(tmpdir(), 'edgemesh-control-plane-'));
  const children: ChildProcess[] = [];
  const pids: Record<string, number> = {};
  // If this process ends without stop() (a crash, a filtered test run, a signal), take everything
  // with it: the processes and the directory, which holds the CA key.
  const killAll = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    killAll();
    process.kill(process.pid, signal); // the handler is gone (once): the default action follows
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  process.once('exit', killAll);
  for (const signal of signals) process.once(signal, onSignal);
  const start = (name: string, args: string[]) => {
    const log = openSync(join(dir, `${name}.log`), 'a');
    const child = spawn(join(bin, name), args, { stdio: ['ignore', log, log] });
    closeSync(log);
    child.once('error', (error) =>
      console.error(`# control plane: ${name} could not start: ${error.message}`),
    );
    children.push(child);
    if (child.pid !== undefined) pids[name] = child.pid;
    child.once('exit', (code, signal) => {
      if (!stopping) console.error(`# control plane: ${name} exited (${code ?? signal}); see its log`);
    });
    return child;
  };
  let stopping = false;
  const stop = async () => {
    stopping = true;
    for (const child of [...children].reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await once(child, 'exit');
      clearTimeout(timer);
    }
    process.removeListener('exit', killAll);
    for (const signal of signals) process.removeListener(signal, onSignal);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const pki = makePki(dir, {
      admin: { user: 'edgemesh-test-admin', groups: ['system:masters'] },
      'controller-manager': { user: 'system:kube-controller-manager' },
      scheduler: { user: 'system:kube-scheduler' },
      kwok: { user: 'kwok', groups: ['system:masters'] },
    });
    const [etcdPort, peerPort, apiPort, kwokPort] = (await freePorts(4)) as [number, number, number, number];
    const etcdUrl = `http://127.0.0.1:${etcdPort}`;
    start('etcd', [
      ...['--data-dir', join(dir, 'etcd'), '--name', 'test'],
      ...['--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl],
      ...['--listen-peer-urls', `http://127.0.0.1:${peerPort}`],
      ...['--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`],
      ...['--initial-cluster', `test=http://127.0.0.1:${peerPort}`],
      // A test cluster's data is thrown away: skip fsync, as envtest's etcd does.
      '--unsafe-no-fsync',
      ...['--quota-backend-bytes', String(4 * 1024 ** 3), '--log-level', 'warn'],
    ]);
    await waitFor(
      'etcd',
      async () => (await fetch(`${etcdUrl}/health`, { signal: AbortSignal.timeout(5000) })).ok,
    );

    const server = `https://127.0.0.1:${apiPort}`;
    const auditArgs = writeAuditPolicy(dir, options.auditGroups);
    start('kube-apiserver', [
      ...['--etcd-servers', etcdUrl, '--secure-port', String(apiPort)],
      ...['--bind-address', '127.0.0.1', '--advertise-address', '127.0.0.1'],
      ...['--tls-cert-file', pki.servingCert, '--tls-private-key-file', pki.servingKey],
      ...['--client-ca-file', pki.caCert, '--authorization-mode', 'Node,RBAC'],
      ...['--service-account-issuer', server, '--api-audiences', server],
      ...['--service-account-key-file', pki.serviceAccountPub],
      ...['--service-account-signing-key-file', pki.serviceAccountKey],
      // Addresses only allocated, never used: nothing here sends to a Service or pod IP.
      ...['--service-cluster-ip-range', '198.19.0.0/16', '--allow-privileged=true'],
      ...['--cert-dir', join(dir, 'apiserver-certs'), '--v', '1'],
      // Simulated nodes register Ready (kwok), so skip the not-ready taint a registering kubelet's
      // node gets until the node lifecycle controller lifts it (minutes for 1,000 nodes on 2 cores).
      '--disable-admission-plugins=TaintNodesByCondition',
      // As OpenShift enables by default: an ownerReference with blockOwnerDeletion needs the right
      // to update the owner's finalizers (the chart grants it on edgemeshes/finalizers).
      '--enable-admission-plugins=OwnerReferencesPermissionEnforcement',
      ...auditArgs,
    ]);
    const kubeconfigText = kubeconfigFor(server, pki.caCert, {
      'client-certificate': pki.clients.admin!.cert,
      'client-key': pki.clients.admin!.key,
    });
    const kubeconfig = join(dir, 'admin.kubeconfig');
    writeFileSync(kubeconfig, kubeconfigText, { mode: 0o600 });
    // kubectl and helm keep discovery and other caches in the home directory by default: keep
    // them in this directory, so that nothing stays behind.
    const toolEnv = {
      ...process.env,
      // helm 4 keeps its Kubernetes discovery cache under $HOME whatever KUBECACHEDIR says.
      HOME: join(dir, 'home'),
      KUBECACHEDIR: join(dir, 'kube-cache'),
      HELM_CACHE_HOME: join(dir, 'helm', 'cache'),
      HELM_CONFIG_HOME: join(dir, 'helm', 'config'),
      HELM_DATA_HOME: join(dir, 'helm', 'data'),
    };
    const kubectlPath = join(bin, 'kubectl');
    const kubectl = (args: string[], input?: string) => {
      // Bounded: a hung server must fail the call, not freeze the test process (spawnSync blocks).
      const r = spawnSync(kubectlPath, ['--kubeconfig', kubeconfig, '--request-timeout', '60s', ...args], {
        encoding: 'utf8',
        input,
        maxBuffer: 64 * 1024 * 1024,
        timeout: 120_000,
        env: toolEnv,
      });
      if (r.status !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr || String(r.error)}`);
      return r.stdout;
    };
    await waitFor('kube-apiserver', async () => (await apiGet(pki, server, '/readyz')).status === 200);

    for (const file of options.apply ?? []) kubectl(['apply', '--server-side', '-f', file]);
    if (options.apply?.length)
      kubectl(['wait', '--for', 'condition=Established', 'crd', '--all', '--timeout', '60s']);
    const clientKubeconfig = (name: string) => {
      const path = join(dir, `${name}.kubeconfig`);
      writeFileSync(
        path,
        kubeconfigFor(server, pki.caCert, {
          'client-certificate': pki.clients[name]!.cert,
          'client-key': pki.clients[name]!.key,
        }),
      );
      return path;
    };
    const controllers = options.controllers ?? [
      'daemonset',
      'deployment',
      'replicaset',
      'garbagecollector',
      'namespace',
      'serviceaccount',
      'root-ca-cert-publisher',
      'nodelifecycle',
    ];
    if (controllers !== false) {
      const kcm = clientKubeconfig('controller-manager');
      start('kube-controller-manager', [
        ...['--kubeconfig', kcm, '--authentication-kubeconfig', kcm, '--authorization-kubeconfig', kcm],
        ...['--controllers', controllers.join(','), '--leader-elect=false', '--secure-port', '0'],
        ...['--use-service-account-credentials=true', '--root-ca-file', pki.caCert],
        ...['--service-account-private-key-file', pki.serviceAccountKey, '--v', '1'],
      ]);
    }
    const scheduler = clientKubeconfig('scheduler');
    start('kube-scheduler', [
      ...['--kubeconfig', scheduler, '--authentication-kubeconfig', scheduler],
      ...['--authorization-kubeconfig', scheduler, '--leader-elect=false', '--secure-port', '0'],
    ]);
    start('kwok', [
      ...['--kubeconfig', clientKubeconfig('kwok'), '--config', join(bin, 'kwok-stages.yaml')],
      ...['--manage-all-nodes=false', '--manage-nodes-with-annotation-selector', 'kwok.x-k8s.io/node=fake'],
      ...['--cidr', '198.18.0.0/16', '--node-ip', '198.18.255.254', '--node-lease-duration-seconds', '40'],
      ...['--server-address', `127.0.0.1:${kwokPort}`, '--v', 'WARN'],
    ]);

    await createNodes(kubectl, options.nodes);
    const plane: ControlPlane = {
      versions,
      kubeconfig,
      kubeconfigText,
      pids,
      kubectl,
      toolEnv,
      serviceAccountKubeconfig(namespace, name, expirationSeconds = 3600) {
        const out = kubectl([
          ...['create', 'token', name, '-n', namespace, '--duration', `${expirationSeconds}s`],
        ]);
        const path = join(dir, `sa-${namespace}-${name}.kubeconfig`);
        writeFileSync(path, kubeconfigFor(server, pki.caCert, { token: out.trim() }), { mode: 0o600 });
        return path;
      },
      auditEvents() {
        const text = existsSync(join(dir, 'audit.log')) ? readFileSync(join(dir, 'audit.log'), 'utf8') : '';
        // The server may be writing the last line as it is read: a line that does not parse is skipped.
        return text.split('\n').flatMap((line) => {
          try {
            return line ? [JSON.parse(line) as AuditEvent] : [];
          } catch {
            return [];
          }
        });
      },
      stop,
    };
    return plane;
  } catch (error) {
    const logs = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kwok']
      .map((n) => join(dir, `${n}.log`))
      .filter(existsSync)
      .map((f) => `--- ${f}\n${readFileSync(f, 'utf8').split('\n').slice(-15).join('\n')}`)
      .join('\n');
    await stop();
    throw new Error(`the control plane did not start: ${(error as Error).message}\n${logs}`, {
      cause: error,
    });
  }
}

function writeAuditPolicy(dir: string, groups: string[] | undefined): string[] {
  if (!groups?.length) return [];
  const policy = join(dir, 'audit-policy.json');
  writeFileSync(
    policy,
    JSON.stringify({
      apiVersion: 'audit.k8s.io/v1',
      kind: 'Policy',
      omitStages: ['RequestReceived'],
      rules: [{ level: 'Metadata', userGroups: groups }, { level: 'None' }],
    }),
  );
  // The log backend in blocking mode: an event is on disk before its request is answered.
  return [
    '--audit-policy-file',
    policy,
    '--audit-log-path',
    join(dir, 'audit.log'),
    '--audit-log-mode',
    'blocking',
  ];
}

async function createNodes(kubectl: (args: string[], input?: string) => string, nodes: SimulatedNode[]) {
  const items = nodes.map((n) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: n.name,
      annotations: { 'kwok.x-k8s.io/node': 'fake', 'node.alpha.kubernetes.io/ttl': '0' },
      labels: {
        'kubernetes.io/hostname': n.name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        type: 'kwok',
        ...n.labels,
      },
    },
    spec: { taints: n.taints ?? [] },
    status: {
      allocatable: { cpu: '8', memory: '32Gi', pods: '110' },
      capacity: { cpu: '8', memory: '32Gi', pods: '110' },
    },
  }));
  // In batches: one kubectl call per node would cost a process each (1,000 nodes in the bench).
  for (let i = 0; i < items.length; i += 200)
    kubectl(
      ['create', '-f', '-'],
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items: items.slice(i, i + 200) }),
    );
  const readyPath = '{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}';
  await waitFor(
    `${nodes.length} Ready nodes`,
    () =>
      kubectl(['get', 'nodes', '-o', `jsonpath=${readyPath}`])
        .split('\n')
        .filter((s) => s === 'True').length >= nodes.length,
    120_000,
    500,
  );
}

function apiGet(pki: Pki, server: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${server}${path}`,
      {
        ca: readFileSync(pki.caCert),
        cert: readFileSync(pki.clients.admin!.cert),
        key: readFileSync(pki.clients.admin!.key),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.setTimeout(5000, () => req.destroy(new Error(`GET ${path}: no answer in 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** Polls `ready` (errors count as not yet) until true, or throws after timeoutMs. */
async function waitFor(
  what: string,
  ready: () => boolean | Promise<boolean>,
  timeoutMs = 60_000,
  intervalMs = 100,
) {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await ready()) return;
    } catch (error) {
      last = error;
    }
    if (performance.now() > deadline)
      throw new Error(
        `${what} not ready within ${timeoutMs} ms${last ? `: ${(last as Error).message}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
