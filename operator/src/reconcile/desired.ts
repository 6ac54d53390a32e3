import { createHash } from 'node:crypto';
import type { V1Node } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { MIN_STORE_BYTES } from '@edgemesh/contracts';
import {
  API_VERSION,
  CACHE_BOUNDS,
  type EdgeMesh,
  type EdgeMeshSpec,
  KIND,
  quantityBytes,
  quantityNanos,
} from '../api/edgemesh.ts';
import type { AgentImage } from './agent-image.ts';

/** The field manager of every object the operator applies. */
export const FIELD_MANAGER = 'edgemesh-operator';
export const MESH_LABEL = 'edgemesh.p2p.dev/mesh';
export const CONFIG_HASH = 'edgemesh.p2p.dev/config-hash';
const CONFIG_DIR = '/etc/edgemesh';
const CACHE_DIR = '/var/lib/edgemesh';

export type KubeObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
};

/** A node selected by a mesh, as the agents' configuration describes it. */
export interface NodePlace {
  zone: string;
  region: string;
  weight: number;
}

/**
 * The agents' mesh name on the control plane (its NATS subjects, which its credentials allow):
 * 1-63 of [A-Za-z0-9_-], and one per EdgeMesh. `<namespace>_<name>` with the name's dots as `_`:
 * neither a namespace nor a name holds `_`, so no two meshes share an id (with `-` between them,
 * a-b/c and a/b-c would), and no such id holds `__`. A longer one is a prefix, `__` and 64 bits of a
 * hash of the whole, so it can be no other mesh's short id either.
 */
export function meshId(mesh: EdgeMesh): string {
  const id = `${mesh.metadata.namespace}_${mesh.metadata.name.replaceAll('.', '_')}`;
  if (id.length <= 63) return id;
  const hash = createHash('sha256').update(`${mesh.metadata.namespace}/${mesh.metadata.name}`).digest('hex');
  return `${id.slice(0, 45)}__${hash.slice(0, 16)}`;
}

export const childName = (mesh: EdgeMesh) => `edgemesh-${mesh.metadata.name}`;

/** Whether `labels` hold every label of a selector (its entries). */
function matchesSelector(labels: Record<string, string> | undefined, selector: [string, string][]): boolean {
  for (const [k, v] of selector) if (labels?.[k] !== v) return false;
  return true;
}

/**
 * Selections made from each list of Nodes, by what of a spec they depend on: the informer hands out
 * one array until a Node changes (kit/informer.ts), and meshes mostly select alike, so a burst of
 * reconciles selects once per selector, not once per mesh over every Node.
 */
const selections = new WeakMap<
  readonly V1Node[],
  { bySpec: Map<string, ReadonlyMap<string, NodePlace>>; places: number }
>();

/**
 * The nodes `spec` selects, with their zone, region and capacity weight. The map may be shared
 * with other meshes that select alike: read only.
 */
export function selectNodes(spec: EdgeMeshSpec, nodes: readonly V1Node[]): ReadonlyMap<string, NodePlace> {
  const key = JSON.stringify([
    spec.nodeSelector ?? null,
    spec.capacity ?? null,
    spec.topology.zoneLabel,
    spec.topology.regionLabel,
  ]);
  let made = selections.get(nodes);
  // Bounded: specs that vary the key over one list (Nodes rarely changing) cannot pile up past a
  // few selections of every Node.
  if (!made || made.places > 8 * Math.max(nodes.length, 64))
    selections.set(nodes, (made = { bySpec: new Map(), places: 0 }));
  let selected = made.bySpec.get(key);
  if (!selected) {
    made.bySpec.set(key, (selected = select(spec, nodes)));
    made.places += selected.size + 1;
  }
  return selected;
}

function select(spec: EdgeMeshSpec, nodes: readonly V1Node[]): ReadonlyMap<string, NodePlace> {
  // The selectors' entries taken once, not per node: a burst of meshes over many nodes made this
  // loop one of the operator's larger costs.
  const wanted = Object.entries(spec.nodeSelector ?? {});
  const rules = (spec.capacity ?? []).map((r) => ({
    entries: Object.entries(r.nodeSelector),
    weight: r.weight,
  }));
  const selected = new Map<string, NodePlace>();
  for (const node of nodes) {
    const labels = node.metadata?.labels;
    if (!node.metadata?.name || !matchesSelector(labels, wanted)) continue;
    const rule = rules.find((r) => matchesSelector(labels, r.entries));
    selected.set(node.metadata.name, {
      zone: labels?.[spec.topology.zoneLabel] ?? '',
      region: labels?.[spec.topology.regionLabel] ?? '',
      weight: rule?.weight ?? 1,
    });
  }
  return selected;
}

/** Where node identity comes from in a cluster: the operator's issuance endpoint and the mesh's trust. */
export interface MeshTrust {
  /** The issuance endpoint agents call (https URL), and its serving certificate (their trust anchor for it). */
  issuer: { url: string; certPem: string };
  /** The mesh's CA certificates agents trust (two during a CA rotation). */
  bundlePem: string;
  /** The revocation list, signed by the mesh CA (revoked.json; also sent on the control plane). */
  revocations: { nodes: string[]; issuedAtMs: number; signature: string };
  /**
   * The cluster's ServiceAccount token issuer and signing keys (JWKS), with which agents check their
   * clients' tokens; absent while the operator could not read them.
   */
  clusterTokens?: { issuer: string; jwks: string } | undefined;
  /** A rotation of the mesh CA in progress: what this reconcile did, and when its next step is due. */
  caRotation?: { did?: string | undefined; why?: string | undefined; nextStepInMs?: number | undefined };
}

/** Where agents find their trust (a ConfigMap), their NATS credentials and their projected ServiceAccount token. */
const TRUST_DIR = '/etc/edgemesh/trust';
const NATS_DIR = '/etc/edgemesh/nats';
const TOKEN_DIR = '/var/run/secrets/edgemesh.p2p.dev';
/** Where each origin headers Secret is mounted: `<ORIGINS_DIR>/<secret>`, one file per header. */
const ORIGINS_DIR = '/etc/edgemesh-origins';

/**
 * The label a Secret must carry, with the value "true", for a mesh to send it as origin headers: the
 * Secret's owner agrees that its values leave the cluster. Without it, anyone who may edit a mesh
 * could point an origin at a server of theirs and have the agents send it any Secret of the
 * namespace (a ServiceAccount token, another application's credentials).
 */
export const ORIGIN_HEADERS_LABEL = 'edgemesh.p2p.dev/origin-headers';

/** The Secrets the mesh's origin rules send as headers, each once, in the order the rules name them. */
export const originHeaderSecrets = (spec: EdgeMeshSpec): string[] => [
  ...new Set((spec.origins ?? []).flatMap((o) => (o.headersSecret ? [o.headersSecret] : []))),
];
/** The audience of the agents' projected token (the issuer checks it with TokenReview). */
export const AGENT_TOKEN_AUDIENCE = 'edgemesh.p2p.dev';
/** The projected token's life; the kubelet renews it at 80% of it, and the agent reads it at each renewal. */
const TOKEN_SECONDS = 3600;

/** The mesh's NATS credentials Secret (mounted at /etc/edgemesh/nats), and whether it holds the server's certificate. */
export interface NatsMount {
  secretName: string;
  tls: boolean;
}

/**
 * The agents' store limit for a cache of `diskBytes`: less room for what that limit leaves out (the
 * agent's files beside the store, its tombstones above all, and the file system's own: docs/agent.md,
 * "The byte limit"), a twentieth and at least 64 MiB, at most a quarter. So the cache as a whole
 * stays within `cache.diskSize`, an EmptyDir's `sizeLimit` (the kubelet evicts a pod that goes over).
 */
export function storeLimitBytes(diskBytes: number): number {
  // A size stored before the CRD's minimum (64Mi) is kept (cacheSize): never below what an agent
  // takes, even if that is more than such a cache's whole size.
  const limit = Math.floor(diskBytes - Math.min(diskBytes / 4, Math.max(64 * 2 ** 20, diskBytes / 20)));
  return Math.max(MIN_STORE_BYTES, limit);
}

/**
 * A cache size as the mesh gets it: the spec's, or the CRD's maximum for one past it (compared
 * exactly, as the API server does: 1Pi and half a byte is past it). Such a value was stored before
 * the CRD bounded it (Kubernetes lets an unchanged value through), and the operator clamps it rather
 * than stop managing the mesh. One below the minimum is kept.
 */
export function cacheSize(spec: EdgeMesh['spec'], field: 'diskSize' | 'memory'): string {
  const { max } = CACHE_BOUNDS[field];
  return quantityNanos(spec.cache[field]) > quantityNanos(max) ? max : spec.cache[field];
}

/** What the agents get instead of a cache size past the CRD's maximum, for an Event; else undefined. */
export function clampedCacheSizes(spec: EdgeMesh['spec']): string | undefined {
  const over = (['diskSize', 'memory'] as const).filter(
    (field) => cacheSize(spec, field) !== spec.cache[field],
  );
  if (over.length === 0) return undefined;
  // A stored value may be hundreds of digits long: cut, so the Event's note keeps the advice.
  const shown = (q: string) => (q.length > 40 ? `${q.slice(0, 37)}...` : q);
  return `${over.map((field) => `cache.${field} ${shown(spec.cache[field])} is more than the agents can use; they get ${cacheSize(spec, field)}`).join('; ')} (set a size within the CRD's bounds: cache.diskSize from ${CACHE_BOUNDS.diskSize.min} to ${CACHE_BOUNDS.diskSize.max}, cache.memory up to ${CACHE_BOUNDS.memory.max})`;
}

/**
 * The agent configuration every node shares (agent.yaml), from the spec (and, with mTLS, where
 * node identity comes from; with NATS credentials, where they are).
 */
export function agentConfig(mesh: EdgeMesh, trust?: MeshTrust, nats?: NatsMount): Record<string, unknown> {
  const { spec } = mesh;
  return {
    mesh: meshId(mesh),
    http: { host: '0.0.0.0', port: spec.ports.http },
    grpc: { host: '0.0.0.0', port: spec.ports.grpc },
    store: {
      dir: CACHE_DIR,
      // Sizes stored before the CRD bounded them are clamped to its maximum (what the agents can count).
      maxBytes: storeLimitBytes(quantityBytes(cacheSize(mesh.spec, 'diskSize'))),
      memoryBytes: quantityBytes(cacheSize(mesh.spec, 'memory')),
      defaultTtlSeconds: spec.cache.defaultTtlSeconds,
    },
    replication: { factor: spec.replication.factor, writeCopies: spec.replication.writeCopies },
    origins: (spec.origins ?? []).map((o) => ({
      prefix: o.prefix,
      url: o.url,
      ...(o.headersSecret ? { headersDir: `${ORIGINS_DIR}/${o.headersSecret}` } : {}),
    })),
    controlPlane: {
      servers: spec.controlPlane.natsUrl.split(','),
      ...(nats ? { credentialsFile: `${NATS_DIR}/creds` } : {}),
      ...(nats?.tls ? { caFile: `${NATS_DIR}/ca.crt` } : {}),
    },
    transfer: { uploadBytesPerSecond: spec.transfer.uploadBytesPerSecond },
    log: { level: spec.agent.logLevel },
    access: {
      ...(trust?.clusterTokens
        ? {
            serviceAccounts: {
              issuer: trust.clusterTokens.issuer,
              jwksFile: `${TRUST_DIR}/jwks.json`,
              audience: AGENT_TOKEN_AUDIENCE,
            },
          }
        : {}),
      anonymous: spec.access.anonymous,
      // By default the ServiceAccounts of the mesh's own namespace may do everything.
      rules: spec.access.rules ?? [
        {
          subjects: [`system:serviceaccounts:${mesh.metadata.namespace}`],
          verbs: ['read', 'write', 'purge', 'send', 'receive'],
          prefixes: [''],
        },
      ],
    },
    security:
      spec.security.mtls && trust
        ? {
            mtls: true,
            issuer: {
              url: trust.issuer.url,
              caFile: `${TRUST_DIR}/issuer.crt`,
              tokenFile: `${TOKEN_DIR}/token`,
              namespace: mesh.metadata.namespace,
              name: mesh.metadata.name,
            },
            trustBundleFile: `${TRUST_DIR}/ca.crt`,
            revocationsFile: `${TRUST_DIR}/revoked.json`,
          }
        : { mtls: false },
  };
}

export const trustConfigMapName = (mesh: EdgeMesh) => `edgemesh-${mesh.metadata.name}-trust`;

/**
 * The cluster token keys the mesh's agents were last given, read back from its ConfigMaps as
 * desiredChildren rendered them (`jwks.json` in the trust ConfigMap, the issuer in agent.yaml):
 * what an operator that cannot read the cluster's keys (an API blip, a new leader that has not read
 * them yet) renders again, so the agents keep their keys and the pods' configuration hash does not
 * change. Undefined when either is missing or unreadable (the mesh never had them).
 */
export function deliveredClusterTokens(
  trustData: Record<string, string> | undefined,
  agentData: Record<string, string> | undefined,
): MeshTrust['clusterTokens'] {
  const jwks = trustData?.['jwks.json'];
  let issuer: unknown;
  try {
    const config = parse(agentData?.['agent.yaml'] ?? '') as {
      access?: { serviceAccounts?: { issuer?: unknown } };
    } | null;
    issuer = config?.access?.serviceAccounts?.issuer;
  } catch {
    return undefined;
  }
  return jwks !== undefined && typeof issuer === 'string' ? { issuer, jwks } : undefined;
}

const labelsOf = (mesh: EdgeMesh) => ({
  'app.kubernetes.io/name': 'edgemesh-agent',
  'app.kubernetes.io/instance': mesh.metadata.name,
  'app.kubernetes.io/component': 'agent',
  'app.kubernetes.io/part-of': 'edgemesh',
  'app.kubernetes.io/managed-by': FIELD_MANAGER,
  [MESH_LABEL]: mesh.metadata.name,
});

/**
 * What an agent container asks for when the spec names no resources: enough for the cache's hot
 * chunks and the Node runtime to be scheduled, no CPU limit (it would throttle transfers and TLS),
 * and no memory limit, which only the platform team can size (spec.agent.resources).
 */
export const DEFAULT_AGENT_RESOURCES = { requests: { cpu: '50m', memory: '128Mi' } };

/**
 * The agents' tolerations when the spec names none: every NoSchedule taint, so that an agent runs on
 * every node the mesh's nodeSelector selects (edge nodes are often tainted to keep ordinary
 * workloads off; the workloads that tolerate the taint need their node's agent). NoExecute taints
 * (a node being drained, out of service) are not tolerated beyond what Kubernetes gives every
 * DaemonSet pod.
 */
export const DEFAULT_AGENT_TOLERATIONS = [{ operator: 'Exists', effect: 'NoSchedule' }];

const selectorOf = (mesh: EdgeMesh) => ({
  'app.kubernetes.io/name': 'edgemesh-agent',
  [MESH_LABEL]: mesh.metadata.name,
});

/** The mesh's NetworkPolicy, as the reconciler deletes it when spec.networkPolicy.enabled is false. */
export const networkPolicyRef = (mesh: EdgeMesh) => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name: childName(mesh), namespace: mesh.metadata.namespace },
});

/**
 * The agents' fence (unless spec.networkPolicy.enabled is false): ingress to their HTTP port (the
 * API and /metrics) from the pods of the mesh's namespace, from spec.networkPolicy.httpFrom and from
 * the operator's scrape namespaces (EDGEMESH_OPERATOR_SCRAPE_NAMESPACES: where Prometheus runs), to
 * their peer port from the mesh's own agents only, and nothing else. Egress is left open (origins,
 * NATS, the issuer and peers are wherever the spec says).
 */
function networkPolicy(
  mesh: EdgeMesh,
  meta: KubeObject['metadata'],
  scrapeNamespaces: readonly string[],
): KubeObject {
  const { ports, networkPolicy: policy } = mesh.spec;
  const peer = (p: { namespaceSelector?: Record<string, string>; podSelector?: Record<string, string> }) => ({
    ...(p.namespaceSelector ? { namespaceSelector: { matchLabels: p.namespaceSelector } } : {}),
    ...(p.podSelector ? { podSelector: { matchLabels: p.podSelector } } : {}),
  });
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: meta,
    spec: {
      podSelector: { matchLabels: selectorOf(mesh) },
      policyTypes: ['Ingress'],
      ingress: [
        {
          from: [
            { podSelector: {} },
            ...(policy.httpFrom ?? []).map(peer),
            ...(scrapeNamespaces.length > 0
              ? [
                  {
                    namespaceSelector: {
                      matchExpressions: [
                        { key: 'kubernetes.io/metadata.name', operator: 'In', values: [...scrapeNamespaces] },
                      ],
                    },
                  },
                ]
              : []),
          ],
          ports: [{ protocol: 'TCP', port: ports.http }],
        },
        {
          from: [{ podSelector: { matchLabels: selectorOf(mesh) } }],
          ports: [{ protocol: 'TCP', port: ports.grpc }],
        },
      ],
    },
  };
}

/** Settings of the operator that reach every mesh's agent pods unless the spec says otherwise. */
export interface ChildrenOptions {
  image: AgentImage;
  trust?: MeshTrust | undefined;
  nats?: NatsMount | undefined;
  /** The agents' PriorityClass when spec.agent.priorityClassName is unset (EDGEMESH_OPERATOR_AGENT_PRIORITY_CLASS). */
  priorityClassName?: string | undefined;
  /** Namespaces whose pods may reach every mesh's HTTP port, for /metrics (EDGEMESH_OPERATOR_SCRAPE_NAMESPACES). */
  scrapeNamespaces?: readonly string[] | undefined;
}

/**
 * What the cache-owner init container hands over: directories, and files with one link, not owned
 * by the agent's user ($id). A hard link in the cache to a file elsewhere on the host (/etc/shadow,
 * linked by an agent gone bad where fs.protected_hardlinks is off) has two links and is left alone:
 * a root chown of it would give the host's file away. Symlinks are not followed (find's default;
 * `chown -h` changes the link itself), nor other file systems (-xdev).
 */
const NOT_THE_AGENTS = '\\( -type d -o -links 1 \\) \\( ! -user "$id" -o ! -group "$id" \\)';

/**
 * The HostPath cache's init container: gives the directory ($1) to the agent's user ($2). A new
 * hostPath is created root-owned; a cache written under another runAsUser (the spec changed) holds
 * files and directories the agent could not write or delete, so everything is handed over, walking
 * the tree only when the directory or one of its entries belongs to someone else (a cache of a
 * million files is not walked at every start). Contents before their directory (-depth): a walk cut
 * off midway leaves the top directory as it was, and the next start walks again.
 */
export const CACHE_OWNER_SCRIPT =
  'set -e; dir="$1"; id="$2"; ' +
  `if [ "$(stat -c %u:%g "$dir")" != "$id:$id" ] || [ -n "$(find "$dir" -mindepth 1 -maxdepth 1 ${NOT_THE_AGENTS} -print -quit)" ]; ` +
  `then find "$dir" -xdev -depth ${NOT_THE_AGENTS} -exec chown -h "$id:$id" {} +; fi`;

/**
 * Everything a mesh runs on, as full desired objects for server-side apply: a ServiceAccount (its
 * token is never mounted; it names the agents' pods to the issuer, through their projected token),
 * the agents' ConfigMap (shared agent.yaml and per-node topology.yaml), a node-local Service, a
 * NetworkPolicy (unless disabled), and the DaemonSet. Each is owned by the EdgeMesh, so
 * deleting the mesh deletes them. The pod template carries a hash of agent.yaml and of the spec's
 * topology labels and capacity rules, so a spec change rolls the agents; Node changes (labels) do not
 * (agents read topology.yaml when they start). The agents
 * run `image` (agent-image.ts: the spec's, else the operator's), so a new operator image rolls them.
 */
export function desiredChildren(
  mesh: EdgeMesh,
  nodes: ReadonlyMap<string, NodePlace>,
  { image, trust, nats, priorityClassName, scrapeNamespaces = [] }: ChildrenOptions,
): KubeObject[] {
  const { spec } = mesh;
  const pulled = { image: image.image, ...(image.pullPolicy ? { imagePullPolicy: image.pullPolicy } : {}) };
  const name = childName(mesh);
  const namespace = mesh.metadata.namespace;
  const labels = labelsOf(mesh);
  const ownerReferences = [
    {
      apiVersion: API_VERSION,
      kind: KIND,
      name: mesh.metadata.name,
      uid: mesh.metadata.uid ?? '',
      controller: true,
      blockOwnerDeletion: true,
    },
  ];
  const meta = (n: string) => ({ name: n, namespace, labels, ownerReferences });
  const mtls = spec.security.mtls && trust !== undefined;
  // In JSON, which is YAML too: an agent reads it without loading a YAML parser (agent/src/config/
  // document.ts; about 0.6 MiB of each idle agent).
  const agentYaml = `${JSON.stringify(agentConfig(mesh, trust, nats), null, 2)}\n`;
  const topology = Object.fromEntries([...nodes].sort(([a], [b]) => (a < b ? -1 : 1)));
  // What agents read only when they start: agent.yaml, and the spec's part of topology.yaml (which
  // labels give the zone and region, the capacity rules). Node changes are left out (below).
  const configHash = createHash('sha256')
    .update(agentYaml)
    .update(JSON.stringify({ topology: spec.topology, capacity: spec.capacity ?? [] }))
    .digest('hex')
    .slice(0, 16);
  const hostPort = spec.ports.exposure === 'HostPort';
  const hostNetwork = spec.ports.exposure === 'HostNetwork';
  const podLabels = { ...selectorOf(mesh), 'app.kubernetes.io/instance': mesh.metadata.name };

  const container = {
    name: 'agent',
    ...pulled,
    args: ['--config', `${CONFIG_DIR}/agent.yaml`, '--topology-file', `${CONFIG_DIR}/topology.yaml`],
    env: [
      { name: 'EDGEMESH_NODE_ID', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
      { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
      { name: 'EDGEMESH_GRPC_ADVERTISE', value: `$(POD_IP):${spec.ports.grpc}` },
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      // The Kubernetes resource attributes of every span and metric the agent exports (the kubelet
      // expands $(VAR) from the variables above).
      {
        name: 'OTEL_RESOURCE_ATTRIBUTES',
        value: `k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),k8s.node.name=$(EDGEMESH_NODE_ID),k8s.daemonset.name=${name}`,
      },
      ...(spec.telemetry.otlpEndpoint
        ? [{ name: 'OTEL_EXPORTER_OTLP_ENDPOINT', value: spec.telemetry.otlpEndpoint }]
        : []),
    ],
    // Peers dial each other's pod address (EDGEMESH_GRPC_ADVERTISE): the peer port never needs a hostPort.
    ports: [
      { name: 'http', containerPort: spec.ports.http, ...(hostPort ? { hostPort: spec.ports.http } : {}) },
      { name: 'grpc', containerPort: spec.ports.grpc },
    ],
    // An agent serves HTTP once it holds its node certificate: give it ten minutes to get one (the
    // operator may be restarting) before liveness counts.
    startupProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 5, failureThreshold: 120 },
    readinessProbe: { httpGet: { path: '/readyz', port: 'http' }, periodSeconds: 5 },
    livenessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 10, failureThreshold: 6 },
    resources: spec.agent.resources ?? DEFAULT_AGENT_RESOURCES,
    securityContext: {
      runAsNonRoot: true,
      runAsUser: spec.security.runAsUser,
      runAsGroup: spec.security.runAsUser,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: [
      { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
      { name: 'cache', mountPath: CACHE_DIR },
      ...(nats ? [{ name: 'nats-credentials', mountPath: NATS_DIR, readOnly: true }] : []),
      ...originHeaderSecrets(spec).map((secret, i) => ({
        name: `origin-headers-${i}`,
        mountPath: `${ORIGINS_DIR}/${secret}`,
        readOnly: true,
      })),
      ...(mtls
        ? [
            { name: 'trust', mountPath: TRUST_DIR, readOnly: true },
            { name: 'identity-token', mountPath: TOKEN_DIR, readOnly: true },
          ]
        : []),
    ],
  };
  const cacheVolume =
    spec.cache.storage === 'HostPath'
      ? {
          name: 'cache',
          hostPath: { path: `${spec.cache.hostPath}/${meshId(mesh)}`, type: 'DirectoryOrCreate' },
        }
      : { name: 'cache', emptyDir: { sizeLimit: cacheSize(spec, 'diskSize') } };

  return [
    {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: meta(name),
      automountServiceAccountToken: false,
    },
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: meta(name),
      // topology.yaml is JSON (a subset of YAML): cheap to write for thousands of nodes.
      data: { 'agent.yaml': agentYaml, 'topology.yaml': `${JSON.stringify({ nodes: topology }, null, 1)}\n` },
    },
    // The mesh's CA certificates and the issuer's: public, read again by agents as they change (a
    // rotation), so not hashed into the pod template.
    ...(mtls
      ? [
          {
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: meta(trustConfigMapName(mesh)),
            data: {
              'ca.crt': trust.bundlePem,
              'issuer.crt': trust.issuer.certPem,
              'revoked.json': `${JSON.stringify(trust.revocations)}\n`,
              ...(trust.clusterTokens ? { 'jwks.json': trust.clusterTokens.jwks } : {}),
            },
          },
        ]
      : []),
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(name),
      spec: {
        selector: selectorOf(mesh),
        // Workloads reach the agent on their own node, and no other: with no agent on their node,
        // the Service has no endpoint for them (kube-proxy drops the connection) and they go to the origin.
        // Only the HTTP API: peers dial each other's pod address.
        internalTrafficPolicy: 'Local',
        ports: [{ name: 'http', port: spec.ports.http, targetPort: 'http', protocol: 'TCP' }],
      },
    },
    ...(spec.networkPolicy.enabled ? [networkPolicy(mesh, meta(name), scrapeNamespaces)] : []),
    {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: meta(name),
      spec: {
        selector: { matchLabels: selectorOf(mesh) },
        updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: '10%' } },
        template: {
          metadata: { labels: podLabels, annotations: { [CONFIG_HASH]: configHash } },
          spec: {
            serviceAccountName: name,
            automountServiceAccountToken: false,
            // No variables for the namespace's Services: the mesh's own, edgemesh-<mesh>, would give
            // EDGEMESH_<MESH>_*, and for a mesh named http or grpc EDGEMESH_HTTP_PORT or
            // EDGEMESH_GRPC_PORT (tcp://...), which are agent settings: the agent would refuse to start.
            enableServiceLinks: false,
            ...(image.pullSecrets.length > 0
              ? { imagePullSecrets: image.pullSecrets.map((secret) => ({ name: secret })) }
              : {}),
            ...(hostNetwork ? { hostNetwork: true, dnsPolicy: 'ClusterFirstWithHostNet' } : {}),
            ...(spec.nodeSelector ? { nodeSelector: spec.nodeSelector } : {}),
            tolerations: spec.tolerations ?? DEFAULT_AGENT_TOLERATIONS,
            ...((spec.agent.priorityClassName ?? priorityClassName)
              ? { priorityClassName: spec.agent.priorityClassName ?? priorityClassName }
              : {}),
            ...(spec.affinity ? { affinity: spec.affinity } : {}),
            securityContext: {
              runAsNonRoot: true,
              fsGroup: spec.security.runAsUser,
              seccompProfile: { type: 'RuntimeDefault' },
            },
            terminationGracePeriodSeconds: 30,
            // A hostPath is created root-owned: hand it to the agent's user, with CHOWN alone (CACHE_OWNER_SCRIPT).
            ...(spec.cache.storage === 'HostPath'
              ? {
                  initContainers: [
                    {
                      name: 'cache-owner',
                      ...pulled,
                      command: [
                        'sh',
                        '-c',
                        CACHE_OWNER_SCRIPT,
                        'cache-owner',
                        CACHE_DIR,
                        `${spec.security.runAsUser}`,
                      ],
                      securityContext: {
                        runAsUser: 0,
                        runAsNonRoot: false,
                        readOnlyRootFilesystem: true,
                        allowPrivilegeEscalation: false,
                        capabilities: { drop: ['ALL'], add: ['CHOWN'] },
                      },
                      volumeMounts: [{ name: 'cache', mountPath: CACHE_DIR }],
                    },
                  ],
                }
              : {}),
            containers: [container],
            volumes: [
              { name: 'config', configMap: { name } },
              cacheVolume,
              ...(nats ? [{ name: 'nats-credentials', secret: { secretName: nats.secretName } }] : []),
              // Readable by the agent's group (fsGroup) only.
              ...originHeaderSecrets(spec).map((secret, i) => ({
                name: `origin-headers-${i}`,
                secret: { secretName: secret, defaultMode: 0o440 },
              })),
              ...(mtls
                ? [
                    { name: 'trust', configMap: { name: trustConfigMapName(mesh) } },
                    {
                      // The token that proves to the issuer which pod (and node) this agent is.
                      name: 'identity-token',
                      projected: {
                        sources: [
                          {
                            serviceAccountToken: {
                              audience: AGENT_TOKEN_AUDIENCE,
                              expirationSeconds: TOKEN_SECONDS,
                              path: 'token',
                            },
                          },
                        ],
                      },
                    },
                  ]
                : []),
            ],
          },
        },
      },
    },
  ];
}
