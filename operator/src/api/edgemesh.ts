import { z } from 'zod';

/**
 * The EdgeMesh API (edgemesh.p2p.dev/v1alpha1), defined once. The TypeScript types below and the
 * CRD in crds/ (`npm run crds` writes it; a test fails when they differ) both come from these schemas.
 * Kubernetes applies the defaults and checks the bounds, patterns and CEL rules at admission, so the
 * operator sees only specs that passed them; what only a running cluster can tell (a Secret that does
 * not exist, no node matching) is reported as Degraded.
 */
export const GROUP = 'edgemesh.p2p.dev';
export const VERSION = 'v1alpha1';
export const KIND = 'EdgeMesh';
export const PLURAL = 'edgemeshes';
export const API_VERSION = `${GROUP}/${VERSION}`;

const QUANTITY = /^([0-9]+)(?:\.([0-9]+))?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/;
const DECIMAL: Record<string, number> = { m: -3, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };
const BINARY: Record<string, number> = { Ki: 10, Mi: 20, Gi: 30, Ti: 40, Pi: 50, Ei: 60 };

/**
 * A Kubernetes quantity exactly, in billionths, rounded up as Kubernetes' parser rounds what is
 * finer than a billionth (so `67108863.9999999991` is 64Mi, and `1Pi` plus half a byte is more).
 * Unlike Kubernetes, it does not cap values past 2^63 - 1 (`8Ei` and more): both are past any bound here.
 */
export function quantityNanos(q: string): bigint {
  const m = QUANTITY.exec(q);
  if (!m) throw new RangeError(`not a quantity: ${q}`);
  const fraction = m[2] ?? '';
  let numerator = BigInt(m[1]! + fraction) * 10n ** 9n;
  let denominator = 10n ** BigInt(fraction.length);
  const suffix = m[3] ?? '';
  if (suffix in BINARY) numerator <<= BigInt(BINARY[suffix]!);
  else if ((DECIMAL[suffix] ?? 0) >= 0) numerator *= 10n ** BigInt(DECIMAL[suffix] ?? 0);
  else denominator *= 10n ** BigInt(-DECIMAL[suffix]!);
  return (numerator + denominator - 1n) / denominator;
}

/** A Kubernetes quantity in bytes, rounded down (a safe integer only up to 8 PiB). */
export function quantityBytes(q: string): number {
  return Number(quantityNanos(q) / 10n ** 9n);
}

/** A Kubernetes resource quantity (e.g. 500m, 10Gi): what quantityNanos reads. */
const quantity = z.string().regex(QUANTITY);

/** The bounds of the cache's sizes (the CRD refuses others; older values are clamped: desired.ts). */
export const CACHE_BOUNDS = { diskSize: { min: '64Mi', max: '1Pi' }, memory: { max: '1Ti' } } as const;

/**
 * A quantity of bytes within bounds, which the API server checks at admission with Kubernetes' CEL
 * quantity library (1.29 and later), so `kubectl apply` refuses it rather than agents crash-looping
 * later. Not checked by the operator's own schema: Kubernetes keeps a value stored before the rule
 * (it ratchets), and the operator must go on managing such a mesh (it clamps: desired.ts).
 */
const byteSize = (bounds: { min?: string; max: string }, what: string) => {
  const { min, max } = bounds;
  const rule = `quantity(self).compareTo(quantity('${max}')) <= 0`;
  return quantity.meta({
    'x-kubernetes-validations': [
      min
        ? {
            rule: `quantity(self).compareTo(quantity('${min}')) >= 0 && ${rule}`,
            message: `${what} must be from ${min} to ${max}`,
          }
        : { rule, message: `${what} must be at most ${max}` },
    ],
  });
};
/** A DNS-1123 name, as for Secrets and ConfigMaps. */
export const objectNameSchema = z
  .string()
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/);
/** A container image reference: registry/repository[:tag][@digest]. */
export const imageSchema = z
  .string()
  .max(1024)
  .regex(/^[a-z0-9][A-Za-z0-9._\-/:@]*$/);
export const pullPolicySchema = z.enum(['Always', 'IfNotPresent', 'Never']);
const labelKey = z
  .string()
  .max(316)
  .regex(
    /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/,
  );
const port = z.int().min(1).max(65535);
const labels = z.record(z.string(), z.string());

const toleration = z
  .strictObject({
    key: z
      .string()
      .optional()
      .describe('The taint key this toleration matches; empty with Exists: every taint.'),
    operator: z
      .enum(['Exists', 'Equal'])
      .optional()
      .describe('Equal (the default) matches the taint value; Exists matches any value.'),
    value: z.string().optional().describe('The taint value to match, with operator Equal.'),
    effect: z
      .enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute'])
      .optional()
      .describe('The taint effect to match; empty: every effect.'),
    tolerationSeconds: z
      .int()
      .optional()
      .describe('With effect NoExecute: how long an agent stays on a node after the taint appears.'),
  })
  .describe('A core/v1 Toleration, as on any pod.');

const cpuMemory = (what: string) =>
  z
    .strictObject({
      cpu: quantity.optional().describe(`CPU the agent container ${what} (e.g. 100m).`),
      memory: quantity.optional().describe(`Memory the agent container ${what} (e.g. 256Mi).`),
    })
    .optional();

const resources = z
  .strictObject({
    requests: cpuMemory('is scheduled with').describe('What the scheduler reserves for each agent.'),
    limits: cpuMemory('may use at most').describe('The most each agent may use.'),
  })
  .describe("The agent container's resources (core/v1 ResourceRequirements, cpu and memory only).");

export const edgeMeshSpecSchema = z
  .strictObject({
    nodeSelector: labels
      .optional()
      .describe(
        'Which nodes run an agent: those with all these labels (all nodes when unset). Also the DaemonSet’s nodeSelector.',
      ),
    tolerations: z
      .array(toleration)
      .max(32)
      .optional()
      .describe(
        'Tolerations of the agent pods. Unset: every NoSchedule taint is tolerated (an agent runs on every node nodeSelector selects, tainted edge nodes included; NoExecute taints still evict it). Set: exactly these (plus those Kubernetes gives every DaemonSet pod).',
      ),
    affinity: z
      .record(z.string(), z.unknown())
      .optional()
      .meta({ 'x-kubernetes-preserve-unknown-fields': true })
      .describe('A core/v1 Affinity for the agent pods, passed to the DaemonSet as it is.'),
    agent: z
      .strictObject({
        image: imageSchema
          .optional()
          .describe(
            "The agent image for this mesh only. Unset (the rule): the operator's agent image (EDGEMESH_OPERATOR_AGENT_IMAGE, which the chart sets from its image.* values: one image for the operator and the agents), so an operator upgrade rolls every mesh's agents.",
          ),
        imagePullPolicy: pullPolicySchema
          .optional()
          .describe(
            "How the agent image is pulled. Unset: the operator's (EDGEMESH_OPERATOR_AGENT_IMAGE_PULL_POLICY), else Kubernetes' default.",
          ),
        imagePullSecrets: z
          .array(objectNameSchema)
          .max(32)
          .optional()
          .describe(
            "Secrets in the mesh's namespace to pull the agent image with, added to the operator's (EDGEMESH_OPERATOR_IMAGE_PULL_SECRETS).",
          ),
        resources: resources
          .optional()
          .describe(
            "The agent container's resources (cpu and memory). Unset: requests of 50m CPU and 128Mi memory, no limits (the operator's default; a CPU limit would throttle transfers). Set: exactly these.",
          ),
        priorityClassName: objectNameSchema
          .optional()
          .describe(
            "The agent pods' PriorityClass. Unset: the operator's (EDGEMESH_OPERATOR_AGENT_PRIORITY_CLASS; the chart makes one, above ordinary workloads, so that an agent is not the first pod preempted on a full node).",
          ),
        logLevel: z
          .enum(['error', 'warn', 'info', 'debug'])
          .default('info')
          .describe("The agents' log level."),
      })
      .prefault({})
      .describe('The agent pods: image, resources, logging.'),
    cache: z
      .strictObject({
        diskSize: byteSize(CACHE_BOUNDS.diskSize, 'cache.diskSize')
          .default('10Gi')
          .describe(
            'The most disk the cache may use on each node (and an emptyDir’s size limit), from 64Mi to 1Pi.',
          ),
        memory: byteSize(CACHE_BOUNDS.memory, 'cache.memory')
          .default('256Mi')
          .describe('Hot chunks kept in memory on each node, up to 1Ti.'),
        storage: z
          .enum(['HostPath', 'EmptyDir'])
          .default('HostPath')
          .describe(
            'Where the cache lives: a HostPath survives agent restarts and upgrades, an EmptyDir does not.',
          ),
        hostPath: z
          .string()
          .regex(/^\/[^\0]*$/)
          .default('/var/lib/edgemesh')
          .describe(
            'With storage HostPath: the node directory under which each mesh keeps its cache (in <hostPath>/<namespace>_<name>). It stays on the node when the mesh is deleted.',
          ),
        defaultTtlSeconds: z
          .int()
          .min(0)
          .max(31_536_000)
          .default(0)
          .describe('Default time to live of stored objects, in seconds; 0 keeps them until evicted.'),
      })
      .prefault({})
      .describe('The cache on each node.'),
    replication: z
      .strictObject({
        factor: z
          .int()
          .min(1)
          .max(7)
          .default(3)
          .describe(
            'Owner nodes per key (they keep its manifest and a copy), chosen by capacity-weighted rendezvous hashing and always spread over regions, then zones, when there are enough.',
          ),
        writeCopies: z
          .int()
          .min(1)
          .max(7)
          .default(1)
          .describe('Copies that must exist before a PUT answers (the writer’s included); at most factor.'),
      })
      .prefault({})
      .meta({
        'x-kubernetes-validations': [
          { rule: 'self.writeCopies <= self.factor', message: 'writeCopies cannot exceed factor' },
        ],
      })
      .describe('How many copies of each object the mesh keeps.'),
    topology: z
      .strictObject({
        zoneLabel: labelKey
          .default('topology.kubernetes.io/zone')
          .describe('The node label that names a node’s zone.'),
        regionLabel: labelKey
          .default('topology.kubernetes.io/region')
          .describe('The node label that names a node’s region.'),
      })
      .prefault({})
      .describe(
        'Where each node is: agents prefer peers in their zone, then region, and spread copies over them.',
      ),
    origins: z
      .array(
        z
          .strictObject({
            prefix: z
              .string()
              .min(1)
              .max(256)
              .describe(
                'Keys starting with this are fetched from url + the rest of the key (longest prefix wins).',
              ),
            url: z
              .string()
              .max(2048)
              .regex(/^https?:\/\/[^\s]+$/)
              .describe('The origin’s base URL (http or https).'),
            headersSecret: objectNameSchema
              .optional()
              .describe(
                "A Secret in the mesh's namespace whose keys and values are sent as request headers to this origin (e.g. Authorization), mounted in the agents and read at each fetch, so a changed Secret is used without a restart. It must carry the label edgemesh.p2p.dev/origin-headers=true (its owner agrees that its values leave the cluster), and the url must be https; the headers are not sent on to a redirect to another origin.",
              ),
          })
          .refine((o) => !o.headersSecret || o.url.startsWith('https://'), {
            message: 'an origin with headersSecret must be https',
            path: ['url'],
          })
          .meta({
            description: 'An origin rule.',
            'x-kubernetes-validations': [
              {
                rule: "!has(self.headersSecret) || self.url.startsWith('https://')",
                message: 'an origin with headersSecret must be https',
              },
            ],
          }),
      )
      .max(64)
      .optional()
      .meta({
        'x-kubernetes-validations': [
          {
            rule: 'self.all(o, self.exists_one(p, p.prefix == o.prefix))',
            message: 'origin prefixes must be unique',
          },
        ],
      })
      .describe(
        'Where objects no node holds come from: a miss is fetched from its origin once for the whole mesh, then shared node to node.',
      ),
    controlPlane: z
      .strictObject({
        natsUrl: z
          .string()
          .max(1024)
          .regex(/^(nats|tls):\/\/[^\s,]+(,(nats|tls):\/\/[^\s,]+)*$/)
          .describe('NATS servers for control-plane events, comma-separated (nats:// or tls://).'),
        credentialsSecret: objectNameSchema
          .optional()
          .describe(
            "A Secret in the mesh's namespace whose `creds` key is a NATS credentials file, for a NATS of your own; its agents and the operator connect with it. Unset with the chart's NATS: the operator gives the mesh a NATS user of its own, allowed only the mesh's subjects.",
          ),
      })
      .describe(
        'The NATS the agents and the operator exchange control-plane events on (membership, purges, revocations, reports); never object bytes.',
      ),
    ports: z
      .strictObject({
        http: port.default(7480).describe('The agents’ HTTP API port, for workloads.'),
        grpc: port
          .default(7481)
          .describe('The port agents serve each other on (mutual TLS, unless security.mtls is false).'),
        exposure: z
          .enum(['HostPort', 'HostNetwork', 'Service'])
          .default('Service')
          .describe(
            "How workloads reach their node's agent. Service (the default): only through the mesh's Service edgemesh-<mesh> (internalTrafficPolicy Local: to the agent on the caller's own node), which exists in every mode. HostPort: also at the node's address on the HTTP port. HostNetwork: the agent runs in the node's network namespace. The peer (gRPC) port never gets a hostPort. HostPort and HostNetwork need the privileged Pod Security level.",
          ),
      })
      .prefault({})
      .meta({
        'x-kubernetes-validations': [
          { rule: 'self.http != self.grpc', message: 'http and grpc ports must differ' },
        ],
      })
      .describe('The agents’ ports and how workloads reach them.'),
    networkPolicy: z
      .strictObject({
        enabled: z
          .boolean()
          .default(true)
          .describe(
            "Render a NetworkPolicy edgemesh-<mesh> for the agent pods: their HTTP port only from pods of the mesh's namespace, from httpFrom and from the operator's scrape namespaces (EDGEMESH_OPERATOR_SCRAPE_NAMESPACES, the chart's agents.scrapeNamespaces), their peer port only from the mesh's own agents, nothing else. No effect with exposure HostNetwork (NetworkPolicies do not apply to pods on the node's network) or without a network plugin that enforces NetworkPolicies.",
          ),
        httpFrom: z
          .array(
            z
              .strictObject({
                namespaceSelector: labels
                  .optional()
                  .describe('Namespaces with all these labels ({}: every namespace). Unset: the mesh’s own.'),
                podSelector: labels
                  .optional()
                  .describe('Pods with all these labels, in those namespaces. Unset: every pod.'),
              })
              .refine((p) => p.namespaceSelector !== undefined || p.podSelector !== undefined, {
                message: 'name namespaceSelector, podSelector or both',
              })
              .meta({
                description:
                  'A NetworkPolicyPeer: namespaces and pods by labels (at least one of the two selectors).',
                'x-kubernetes-validations': [
                  {
                    rule: 'has(self.namespaceSelector) || has(self.podSelector)',
                    message: 'name namespaceSelector, podSelector or both',
                  },
                ],
              }),
          )
          .max(32)
          .optional()
          .describe(
            "Who else may reach the agents' HTTP port (API and /metrics), beside the pods of the mesh's namespace: workloads of other namespaces, and your Prometheus (e.g. namespaceSelector kubernetes.io/metadata.name: monitoring).",
          ),
      })
      .prefault({})
      .describe('The NetworkPolicy that fences the agents.'),
    security: z
      .strictObject({
        mtls: z
          .boolean()
          .default(true)
          .describe(
            'Mutual TLS between agents with node certificates the operator issues (after checking each agent pod’s token), and signed control-plane events. false: plaintext and anonymous peers, for a trusted lab only; the agents then check no ServiceAccount token either, so clients get only what access.anonymous allows.',
          ),
        revokedNodes: z
          .array(z.string().min(1).max(253))
          .max(1000)
          .optional()
          .describe(
            'Nodes whose certificates every agent refuses within seconds (a list signed by the mesh CA); they get no new certificate. Remove a node to let it back in. A list over 64 KiB (names of more than about 60 characters on average, at 1,000) reaches running agents through their trust ConfigMap only, as the kubelet updates it (about a minute by default; Event RevocationsNotPublished).',
          ),
        runAsUser: z
          .int()
          .min(1)
          .max(2_147_483_647)
          .default(65532)
          .describe('The user and group id the agents run as (and own their cache directory as).'),
      })
      .prefault({})
      .describe('Node identities, revocations and the agents’ user.'),
    access: z
      .strictObject({
        anonymous: z
          .enum(['none', 'read', 'all'])
          .default('none')
          .describe('What clients without a token may do, on every key and topic.'),
        rules: z
          .array(
            z
              .strictObject({
                subjects: z
                  .array(z.string().min(1).max(320))
                  .min(1)
                  .max(100)
                  .describe(
                    'system:serviceaccount:<ns>:<name>, system:serviceaccounts:<ns>, authenticated or anonymous.',
                  ),
                verbs: z
                  .array(z.enum(['read', 'write', 'purge', 'send', 'receive']))
                  .min(1)
                  .max(5)
                  .describe('read, write, purge (on keys); send, receive (on exchange topics).'),
                prefixes: z
                  .array(z.string().max(512))
                  .min(1)
                  .max(100)
                  .default([''])
                  .describe("Key or topic prefixes (plain string prefixes); '' is everything."),
              })
              .describe('Who (subjects) may do what (verbs) where (prefixes).'),
          )
          .max(100)
          .optional()
          .describe(
            "Who may do what; a client gets what every rule naming it or its groups gives. Default: the ServiceAccounts of the mesh's namespace may do everything.",
          ),
      })
      .prefault({})
      .describe(
        "Who may use the agents' HTTP API: clients send a projected ServiceAccount token for the audience edgemesh.p2p.dev. Tokens are checked only with security.mtls; with it false, only anonymous access works.",
      ),
    telemetry: z
      .strictObject({
        otlpEndpoint: z
          .string()
          .max(2048)
          .regex(/^https?:\/\/[^\s]+$/)
          .optional()
          .describe(
            'An OTLP/HTTP endpoint (e.g. http://otel-collector:4318) the agents send traces and metrics to. Metrics are always served at /metrics on the HTTP port.',
          ),
      })
      .prefault({})
      .describe('Where the agents send telemetry.'),
    transfer: z
      .strictObject({
        uploadBytesPerSecond: z
          .int()
          .min(0)
          .default(0)
          .describe(
            'The most bytes per second each agent sends to peers, shared fairly among the zones asking; 0: no limit.',
          ),
      })
      .prefault({})
      .describe('Limits on transfers between agents.'),
    capacity: z
      .array(
        z
          .strictObject({
            nodeSelector: labels.describe('The nodes this rule is for: those with all these labels.'),
            weight: z
              .int()
              .min(0)
              .max(100)
              .describe(
                'Share of keys owned relative to other nodes; 0 owns none (battery, metered or draining nodes).',
              ),
          })
          .describe('A capacity rule.'),
      )
      .max(32)
      .optional()
      .describe('Per-node capacity, first matching rule wins; nodes no rule matches get weight 1.'),
  })
  .describe('What the mesh runs on and how it behaves.');

/** A metav1.Condition. */
export const conditionSchema = z
  .strictObject({
    type: z.string().max(316).describe('Ready, Progressing, Degraded or ControlPlaneConnected.'),
    status: z.enum(['True', 'False', 'Unknown']).describe('True, False or Unknown.'),
    observedGeneration: z
      .int()
      .min(0)
      .optional()
      .describe('The generation of the spec the condition was set for.'),
    lastTransitionTime: z.string().describe('When the status last changed.'),
    reason: z
      .string()
      .max(1024)
      .regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/)
      .describe('Why, in one CamelCase word.'),
    message: z.string().max(32768).describe('Why, for people.'),
  })
  .describe('A condition (metav1.Condition).');

export const edgeMeshStatusSchema = z
  .strictObject({
    observedGeneration: z
      .int()
      .min(0)
      .optional()
      .describe('The generation of the spec this status was computed for.'),
    conditions: z
      .array(conditionSchema)
      .optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] })
      .describe(
        'Ready: agents rolled out and reporting on the control plane. Progressing: a rollout under way. Degraded: the spec cannot be carried out (the running mesh is left alone). ControlPlaneConnected: every agent reports on NATS.',
      ),
    desiredAgents: z.int().min(0).optional().describe('Nodes an agent should run on.'),
    readyAgents: z.int().min(0).optional().describe('Agents running and ready.'),
    updatedAgents: z.int().min(0).optional().describe('Agents running the current configuration.'),
    reportingAgents: z
      .int()
      .min(0)
      .optional()
      .describe('Selected nodes whose agent reported on the control plane in the last minute.'),
    zones: z.record(z.string(), z.int().min(0)).optional().describe('Selected nodes per zone.'),
    regions: z.record(z.string(), z.int().min(0)).optional().describe('Selected nodes per region.'),
    hitRatio: z
      .string()
      .optional()
      .describe('Lookups answered from the local cache, over all agents (from their reports).'),
    bytesFromPeers: z.int().min(0).optional().describe('Bytes agents got from peers (from their reports).'),
    bytesFromOrigin: z
      .int()
      .min(0)
      .optional()
      .describe('Bytes agents fetched from origins (from their reports).'),
    distrustedPeers: z
      .int()
      .min(0)
      .optional()
      .describe('The most peers any one agent distrusts (its reputation of them fell too low).'),
    distrustedNodes: z
      .array(
        z
          .strictObject({
            node: z.string().max(253).describe('The node.'),
            by: z.int().min(1).describe('How many agents distrust it.'),
          })
          .describe('A distrusted node.'),
      )
      .max(16)
      .optional()
      .describe(
        'Nodes the agents distrust from what each verified itself (bad chunks, unsigned manifests, failures), with how many agents named each in a signed report of the last 5 minutes; the most distrusted first.',
      ),
  })
  .describe('What the operator and the agents report.');

export type EdgeMeshSpec = z.output<typeof edgeMeshSpecSchema>;
export type EdgeMeshSpecInput = z.input<typeof edgeMeshSpecSchema>;
export type EdgeMeshStatus = z.output<typeof edgeMeshStatusSchema>;
export type Condition = z.output<typeof conditionSchema>;

export interface ObjectMeta {
  name: string;
  namespace: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  creationTimestamp?: Date;
  deletionTimestamp?: Date;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
}

export interface EdgeMesh {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: ObjectMeta;
  spec: EdgeMeshSpec;
  status?: EdgeMeshStatus;
}
