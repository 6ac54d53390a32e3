import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { MIN_STORE_BYTES } from '@edgemesh/contracts';
import { edgeMeshSpecSchema, type EdgeMesh } from '../api/edgemesh.ts';
import { deliveredClusterTokens, desiredChildren, meshId, type MeshTrust } from './desired.ts';

const id = (namespace: string, name: string) => meshId({ metadata: { namespace, name } } as EdgeMesh);

describe('mesh ids on the control plane', () => {
  it('gives no two meshes the same id (their NATS subjects, and what their credentials allow)', () => {
    assert.equal(id('shop', 'cdn'), 'shop_cdn');
    assert.notEqual(id('a-b', 'c'), id('a', 'b-c'));
    assert.notEqual(id('x', 'a.b'), id('x-a', 'b'));
    // A long name is a prefix, `__` and a hash: a short id never holds `__` (a valid name has no `..`),
    // so no mesh can be named to take a long one's id, not even by copying it.
    const long = id('shop', 'images.cdn.europe-west1.production.customer-facing.example.com');
    assert.ok(long.length <= 63 && /^[A-Za-z0-9_-]+$/.test(long), long);
    assert.match(long, /__[0-9a-f]{16}$/);
    const copied = long.slice('shop_'.length);
    for (const name of [copied.replaceAll('_', '.').replace('..', '.'), copied.replaceAll('_', '-')])
      assert.doesNotMatch(id('shop', name), /__/, name);
  });
});

type Container = {
  name: string;
  env: { name: string; value?: string; valueFrom?: { fieldRef: { fieldPath: string } } }[];
  ports: { name: string; hostPort?: number }[];
  resources?: unknown;
};
type Pod = {
  hostNetwork?: boolean;
  enableServiceLinks?: boolean;
  tolerations?: unknown[];
  priorityClassName?: string;
  containers: Container[];
  volumes?: { name: string; emptyDir?: unknown }[];
  initContainers?: { name: string; command: string[] }[];
};
const render = (
  spec: Record<string, unknown> = {},
  options: { priorityClassName?: string; scrapeNamespaces?: string[] } = {},
) => {
  const mesh = {
    apiVersion: 'edgemesh.p2p.dev/v1alpha1',
    kind: 'EdgeMesh',
    metadata: { namespace: 'shop', name: 'cdn', uid: 'u' },
    spec: edgeMeshSpecSchema.parse({ controlPlane: { natsUrl: 'nats://nats:4222' }, ...spec }),
  } as EdgeMesh;
  const objects = desiredChildren(mesh, new Map(), {
    image: { image: 'edgemesh:1', pullSecrets: [] },
    ...options,
  });
  const of = <T>(kind: string) => objects.find((o) => o.kind === kind) as unknown as T;
  const pod = of<{ spec: { template: { spec: Pod } } }>('DaemonSet').spec.template.spec;
  return { objects, of, pod, agent: pod.containers[0]! };
};

describe('how workloads reach the agents', () => {
  it('is the node-local Service by default: no hostPort, no host network', () => {
    const { pod, agent, of } = render();
    assert.deepEqual(
      agent.ports.filter((p) => p.hostPort !== undefined),
      [],
    );
    assert.equal(pod.hostNetwork, undefined);
    const service = of<{ spec: { internalTrafficPolicy: string; ports: { name: string }[] } }>('Service');
    assert.equal(service.spec.internalTrafficPolicy, 'Local');
    assert.deepEqual(
      service.spec.ports.map((p) => p.name),
      ['http'],
      'the Service carries the HTTP API only: peers dial pod addresses',
    );
  });

  it('gives only the HTTP port a hostPort with HostPort, and the peer port none in any mode', () => {
    assert.deepEqual(render({ ports: { exposure: 'HostPort' } }).agent.ports, [
      { name: 'http', containerPort: 7480, hostPort: 7480 },
      { name: 'grpc', containerPort: 7481 },
    ]);
    for (const exposure of ['Service', 'HostPort', 'HostNetwork'])
      assert.equal(
        render({ ports: { exposure } }).agent.ports.find((p) => p.name === 'grpc')?.hostPort,
        undefined,
        exposure,
      );
    assert.equal(render({ ports: { exposure: 'HostNetwork' } }).pod.hostNetwork, true);
  });
});

describe('the agent pods', () => {
  it('make no Role or RoleBinding: agents hold no API token', () => {
    const kinds = render().objects.map((o) => o.kind);
    assert.ok(!kinds.includes('Role') && !kinds.includes('RoleBinding'), kinds.join());
  });

  it('get no variables for the namespace’s Services, which would set agent settings (EDGEMESH_HTTP_PORT for a mesh named http)', () => {
    assert.equal(render().pod.enableServiceLinks, false);
  });

  it('request 50m CPU and 128Mi by default, with no CPU limit; spec.agent.resources replaces that', () => {
    assert.deepEqual(render().agent.resources, { requests: { cpu: '50m', memory: '128Mi' } });
    const own = { requests: { memory: '1Gi' }, limits: { memory: '2Gi' } };
    assert.deepEqual(render({ agent: { resources: own } }).agent.resources, own);
  });

  it('keep their store within cache.diskSize, the EmptyDir sizeLimit, with room for what its limit leaves out', () => {
    for (const [diskSize, maxBytes] of [
      ['10Gi', 9.5 * 2 ** 30], // a twentieth
      ['1Gi', 2 ** 30 - 64 * 2 ** 20], // at least 64 MiB
      ['128Mi', 96 * 2 ** 20], // at most a quarter
    ] as const) {
      const { of, pod } = render({ cache: { diskSize, storage: 'EmptyDir' } });
      const config = of<{ data: Record<string, string> }>('ConfigMap').data['agent.yaml']!;
      // JSON (YAML too), which agents read without loading a YAML parser (agent/src/config/document.ts).
      assert.equal(
        (JSON.parse(config) as { store: { maxBytes: number } }).store.maxBytes,
        maxBytes,
        diskSize,
      );
      assert.deepEqual(parse(config), JSON.parse(config));
      const volume = pod.volumes?.find((v) => v.name === 'cache');
      assert.deepEqual(volume?.emptyDir, { sizeLimit: diskSize });
    }
  });

  it('take a cache size stored before the CRD bounded it: clamped to what the agents count, the rest as it was', () => {
    const config = (cache: object) =>
      parse(render({ cache }).of<{ data: Record<string, string> }>('ConfigMap').data['agent.yaml']!) as {
        store: { maxBytes: number; memoryBytes: number };
      };
    // 8Ei is past what an agent counts (2^53 bytes): its configuration refused it, a crash loop.
    assert.equal(config({ diskSize: '8Ei' }).store.maxBytes, Math.floor(2 ** 50 - 2 ** 50 / 20));
    assert.equal(config({ memory: '2Ti' }).store.memoryBytes, 2 ** 40);
    assert.equal(config({ diskSize: '32Mi' }).store.maxBytes, 24 * 2 ** 20, 'below the minimum: as before');
    // An agent refuses a store under 4 MiB (MIN_STORE_BYTES): its agents would crash-loop.
    assert.equal(
      config({ diskSize: '2Mi' }).store.maxBytes,
      MIN_STORE_BYTES,
      'never below what an agent takes',
    );
    const emptyDir = (cache: object) =>
      render({ cache: { storage: 'EmptyDir', ...cache } }).pod.volumes?.find((v) => v.name === 'cache')
        ?.emptyDir;
    assert.deepEqual(
      emptyDir({ diskSize: '8Ei' }),
      { sizeLimit: '1Pi' },
      'the EmptyDir is bounded as the store is',
    );
    assert.deepEqual(emptyDir({ diskSize: '32Mi' }), { sizeLimit: '32Mi' });
  });

  it('hand a HostPath cache to the agent’s user, all of it when it was written under another runAsUser', (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to give files away (as the init container runs)');
    const init = render({ security: { runAsUser: 4242 } }).pod.initContainers?.find(
      (c) => c.name === 'cache-owner',
    );
    assert.ok(init, 'HostPath (the default) has the init container');
    assert.equal(init.command.at(-1), '4242');
    // As the init container runs it: root with CHOWN alone (no DAC_OVERRIDE: it reads directories as
    // their modes let anyone), when setpriv can drop the rest.
    const ownerScript = (path: string, id: string) => {
      const [cmd, ...args] = [...init.command.slice(0, -2), path, id];
      const caps = ['--bounding-set', '-all,+chown'];
      try {
        execFileSync('setpriv', [...caps, 'true']);
      } catch {
        return execFileSync(cmd, args);
      }
      return execFileSync('setpriv', [...caps, cmd, ...args]);
    };
    const dir = mkdtempSync(join(tmpdir(), 'edgemesh-cache-owner-'));
    chmodSync(dir, 0o755); // as kubelet makes a hostPath, and the agent its directories
    try {
      // What the agent wrote as uid 1000: directories and files that uid 4242 could not write or delete.
      mkdirSync(join(dir, 'chunks', 'ab'), { recursive: true });
      writeFileSync(join(dir, 'chunks', 'ab', 'c1'), 'x');
      writeFileSync(join(dir, 'store.db'), 'x');
      for (const path of [
        dir,
        join(dir, 'chunks'),
        join(dir, 'chunks', 'ab'),
        join(dir, 'chunks', 'ab', 'c1'),
        join(dir, 'store.db'),
      ])
        chownSync(path, 1000, 1000);
      const run = () => ownerScript(dir, init.command.at(-1)!);
      run();
      for (const path of ['', 'chunks', 'chunks/ab', 'chunks/ab/c1', 'store.db']) {
        const { uid, gid } = statSync(join(dir, path));
        assert.deepEqual([uid, gid], [4242, 4242], path || 'the directory');
      }
      // Already the agent's at the top: not walked again (a deep file someone else owns stays so).
      chownSync(join(dir, 'chunks', 'ab', 'c1'), 1, 1);
      run();
      assert.equal(statSync(join(dir, 'chunks', 'ab', 'c1')).uid, 1);
      // The directory is the agent's but an entry is not (what the old init container, which handed
      // over the directory alone, left): walked.
      chownSync(join(dir, 'store.db'), 1000, 1000);
      run();
      assert.equal(statSync(join(dir, 'store.db')).uid, 4242);
      assert.equal(statSync(join(dir, 'chunks', 'ab', 'c1')).uid, 4242);
      // A hard link to a host file (an agent gone bad, fs.protected_hardlinks off): never given away.
      const host = mkdtempSync(join(tmpdir(), 'edgemesh-host-'));
      try {
        writeFileSync(join(host, 'shadow'), 'secret');
        chownSync(join(host, 'shadow'), 0, 0);
        linkSync(join(host, 'shadow'), join(dir, 'chunks', 'shadow'));
        linkSync(join(host, 'shadow'), join(dir, 'shadow'));
        chownSync(dir, 1000, 1000);
        run();
        assert.equal(statSync(dir).uid, 4242, 'walked');
        assert.equal(statSync(join(host, 'shadow')).uid, 0, 'the host file is still root’s');
      } finally {
        rmSync(host, { recursive: true, force: true });
      }
      // A fresh hostPath (root's): handed over.
      const fresh = join(dir, 'fresh');
      mkdirSync(fresh);
      chownSync(fresh, 0, 0);
      ownerScript(fresh, '4242');
      assert.equal(statSync(fresh).uid, 4242);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('tolerate every NoSchedule taint by default; spec.tolerations replaces that', () => {
    assert.deepEqual(render().pod.tolerations, [{ operator: 'Exists', effect: 'NoSchedule' }]);
    const own = [{ key: 'edge', operator: 'Exists', effect: 'NoExecute' }];
    assert.deepEqual(render({ tolerations: own }).pod.tolerations, own);
    assert.deepEqual(render({ tolerations: [] }).pod.tolerations, [], 'an empty list tolerates nothing');
  });

  it("run at the operator's priority class unless the spec names one", () => {
    assert.equal(render().pod.priorityClassName, undefined);
    assert.equal(render({}, { priorityClassName: 'edgemesh-agent' }).pod.priorityClassName, 'edgemesh-agent');
    assert.equal(
      render({ agent: { priorityClassName: 'edge-critical' } }, { priorityClassName: 'edgemesh-agent' }).pod
        .priorityClassName,
      'edge-critical',
    );
  });

  it('export the pod, node and namespace as OpenTelemetry resource attributes, from variables defined before', () => {
    const { env } = render().agent;
    const at = (name: string) => env.findIndex((e) => e.name === name);
    const otel = env.find((e) => e.name === 'OTEL_RESOURCE_ATTRIBUTES')?.value ?? '';
    const attributes = Object.fromEntries(otel.split(',').map((kv) => kv.split('=')));
    assert.deepEqual(attributes, {
      'k8s.pod.name': '$(POD_NAME)',
      'k8s.namespace.name': '$(POD_NAMESPACE)',
      'k8s.node.name': '$(EDGEMESH_NODE_ID)',
      'k8s.daemonset.name': 'edgemesh-cdn',
    });
    const fields = {
      POD_NAME: 'metadata.name',
      POD_NAMESPACE: 'metadata.namespace',
      EDGEMESH_NODE_ID: 'spec.nodeName',
    };
    for (const [name, fieldPath] of Object.entries(fields)) {
      assert.equal(env[at(name)]?.valueFrom?.fieldRef.fieldPath, fieldPath, name);
      // The kubelet expands $(VAR) only from variables earlier in the list.
      assert.ok(at(name) < at('OTEL_RESOURCE_ATTRIBUTES'), `${name} comes first`);
    }
  });
});

describe('the NetworkPolicy', () => {
  type Policy = {
    spec: {
      podSelector: { matchLabels: Record<string, string> };
      policyTypes: string[];
      ingress: { from: Record<string, unknown>[]; ports: { port: number; protocol: string }[] }[];
    };
  };
  it('lets the HTTP port be reached from the namespace (and httpFrom), the peer port from the mesh’s agents alone', () => {
    const { of, pod } = render({
      networkPolicy: {
        httpFrom: [
          { namespaceSelector: { 'kubernetes.io/metadata.name': 'monitoring' } },
          { namespaceSelector: { team: 'shop' }, podSelector: { app: 'web' } },
        ],
      },
    });
    const policy = of<Policy>('NetworkPolicy');
    const selector = { 'app.kubernetes.io/name': 'edgemesh-agent', 'edgemesh.p2p.dev/mesh': 'cdn' };
    assert.deepEqual(policy.spec.podSelector.matchLabels, selector);
    assert.ok(pod && policy.spec.policyTypes.includes('Ingress'));
    assert.deepEqual(policy.spec.ingress, [
      {
        from: [
          { podSelector: {} },
          { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
          {
            namespaceSelector: { matchLabels: { team: 'shop' } },
            podSelector: { matchLabels: { app: 'web' } },
          },
        ],
        ports: [{ protocol: 'TCP', port: 7480 }],
      },
      { from: [{ podSelector: { matchLabels: selector } }], ports: [{ protocol: 'TCP', port: 7481 }] },
    ]);
  });

  it("lets the operator's scrape namespaces (Prometheus's) reach the HTTP port of every mesh, and only that port", () => {
    const { of } = render({}, { scrapeNamespaces: ['monitoring', 'observability'] });
    const [http, grpc] = of<Policy>('NetworkPolicy').spec.ingress;
    assert.deepEqual(http?.from.at(-1), {
      namespaceSelector: {
        matchExpressions: [
          { key: 'kubernetes.io/metadata.name', operator: 'In', values: ['monitoring', 'observability'] },
        ],
      },
    });
    assert.equal(grpc?.from.length, 1, 'the peer port stays the agents’ alone');
    assert.deepEqual(render().of<Policy>('NetworkPolicy').spec.ingress[0]?.from, [{ podSelector: {} }]);
  });

  it('is rendered by default and not when disabled', () => {
    assert.ok(render().objects.some((o) => o.kind === 'NetworkPolicy'));
    assert.ok(!render({ networkPolicy: { enabled: false } }).objects.some((o) => o.kind === 'NetworkPolicy'));
  });
});

describe('the cluster token keys', () => {
  const mesh = {
    apiVersion: 'edgemesh.p2p.dev/v1alpha1',
    kind: 'EdgeMesh',
    metadata: { namespace: 'shop', name: 'cdn', uid: 'u' },
    spec: edgeMeshSpecSchema.parse({
      controlPlane: { natsUrl: 'nats://nats:4222' },
      security: { mtls: true },
    }),
  } as EdgeMesh;
  const trust = (clusterTokens: MeshTrust['clusterTokens']): MeshTrust => ({
    issuer: { url: 'https://issuer.edgemesh-system.svc:8443', certPem: 'ISSUER' },
    bundlePem: 'CA',
    revocations: { nodes: [], issuedAtMs: 1, signature: 's' },
    clusterTokens,
  });
  const children = (t: MeshTrust) => {
    const objects = desiredChildren(mesh, new Map(), {
      image: { image: 'edgemesh:1', pullSecrets: [] },
      trust: t,
    });
    const data = (name: string) =>
      (
        objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === name) as unknown as {
          data: Record<string, string>;
        }
      ).data;
    const template = (
      objects.find((o) => o.kind === 'DaemonSet') as unknown as { spec: { template: unknown } }
    ).spec.template;
    return { trustData: data('edgemesh-cdn-trust'), agentData: data('edgemesh-cdn'), template };
  };

  it('are read back from what the agents were given, so an operator that cannot read them renders the same pods', () => {
    const keys = { issuer: 'https://kubernetes.default.svc.cluster.local', jwks: '{"keys":[{"kid":"a"}]}\n' };
    const given = children(trust(keys));
    const again = deliveredClusterTokens(given.trustData, given.agentData);
    assert.deepEqual(again, keys);
    // Rendered from what was read back: the same pod template (no roll), the same keys to agents.
    const rendered = children(trust(again));
    assert.deepEqual(rendered.template, given.template);
    assert.deepEqual(rendered.trustData, given.trustData);
    // Rendered without them, the pods would roll: what this guards against.
    assert.notDeepEqual(children(trust(undefined)).template, given.template);
  });

  it('are undefined when the agents never had them, or their ConfigMaps are missing or unreadable', () => {
    const without = children(trust(undefined));
    assert.equal(deliveredClusterTokens(without.trustData, without.agentData), undefined);
    assert.equal(deliveredClusterTokens(undefined, undefined), undefined);
    assert.equal(deliveredClusterTokens({ 'jwks.json': '{}' }, { 'agent.yaml': ': not yaml: [' }), undefined);
    assert.equal(deliveredClusterTokens({ 'jwks.json': '{}' }, { 'agent.yaml': 'null' }), undefined);
  });
});
