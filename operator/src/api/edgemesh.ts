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

/** A Kubernetes resource quantity (e.g. 500m, 10Gi). */
const quantity = z.string().regex(/^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/);
/** A DNS-1123 name, as for Secrets and ConfigMaps. */
const objectName = z
  .string()
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/);
const labelKey = z
  .string()
  .max(316)
  .regex(
    /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/,
  );
const port = z.int().min(1).max(65535);
const labels = z.record(z.string(), z.string());

const toleration = z.strictObject({
  key: z.string().optional(),
  operator: z.enum(['Exists', 'Equal']).optional(),
  value: z.string().optional(),
  effect: z.enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute']).optional(),
  tolerationSeconds: z.int().optional(),
});

const resources = z.strictObject({
  requests: z.strictObject({ cpu: quantity.optional(), memory: quantity.optional() }).optional(),
  limits: z.strictObject({ cpu: quantity.optional(), memory: quantity.optional() }).optional(),
});

export const edgeMeshSpecSchema = z
  .strictObject({
    /** Which nodes run an agent: all of them by default. */
    nodeSelector: labels.optional(),
    tolerations: z.array(toleration).max(32).optional(),
    /** A core/v1 Affinity, passed to the DaemonSet as it is. */
    affinity: z
      .record(z.string(), z.unknown())
      .optional()
      .meta({ 'x-kubernetes-preserve-unknown-fields': true }),
    agent: z
      .strictObject({
        image: z
          .string()
          .regex(/^[a-z0-9][a-z0-9._\-/:@]*$/)
          .default('ghcr.io/edgemesh/edgemesh:0.1.0'),
        imagePullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']).default('IfNotPresent'),
        resources: resources.optional(),
        logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
      })
      .prefault({}),
    cache: z
      .strictObject({
        /** The most disk the cache may use on each node. */
        diskSize: quantity.default('10Gi'),
        /** Hot chunks kept in memory on each node. */
        memory: quantity.default('256Mi'),
        /** Where the cache lives: a hostPath survives agent restarts, an emptyDir does not. */
        storage: z.enum(['HostPath', 'EmptyDir']).default('HostPath'),
        hostPath: z
          .string()
          .regex(/^\/[^\0]*$/)
          .default('/var/lib/edgemesh'),
        /** Default time to live of objects; 0 keeps them until evicted. */
        defaultTtlSeconds: z.int().min(0).max(31_536_000).default(0),
      })
      .prefault({}),
    replication: z
      .strictObject({
        factor: z.int().min(1).max(7).default(3),
        /** Copies that must exist before a PUT answers (the writer's included). */
        writeCopies: z.int().min(1).max(7).default(1),
        /** Spread a key's owners over regions and zones when enough exist. */
        zoneSpread: z.boolean().default(true),
      })
      .prefault({})
      .meta({
        'x-kubernetes-validations': [
          { rule: 'self.writeCopies <= self.factor', message: 'writeCopies cannot exceed factor' },
        ],
      }),
    topology: z
      .strictObject({
        zoneLabel: labelKey.default('topology.kubernetes.io/zone'),
        regionLabel: labelKey.default('topology.kubernetes.io/region'),
        /** A node annotation holding "lat,lon" coordinates, when nodes have them. */
        coordinatesAnnotation: labelKey.optional(),
      })
      .prefault({}),
    origins: z
      .array(
        z.strictObject({
          /** Keys starting with this go to `url` + the rest of the key. */
          prefix: z.string().min(1).max(256),
          url: z
            .string()
            .max(2048)
            .regex(/^https?:\/\/[^\s]+$/),
          /** A Secret whose keys and values are sent as request headers to this origin. */
          headersSecret: objectName.optional(),
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
      }),
    controlPlane: z.strictObject({
      /** NATS servers, comma-separated. */
      natsUrl: z
        .string()
        .max(1024)
        .regex(/^(nats|tls):\/\/[^\s,]+(,(nats|tls):\/\/[^\s,]+)*$/)
        .describe('NATS servers for control-plane events, comma-separated (nats:// or tls://).'),
      /** A Secret with a `creds` key (a NATS credentials file). */
      credentialsSecret: objectName
        .optional()
        .describe(
          "A Secret in the mesh's namespace whose `creds` key is a NATS credentials file, for a NATS of your own; its agents and the operator connect with it. Unset with the chart's NATS: the operator gives the mesh a NATS user of its own, allowed only the mesh's subjects.",
        ),
    }),
    ports: z
      .strictObject({
        http: port.default(7480),
        grpc: port.default(7481),
        /**
         * How workloads reach their node's agent: a hostPort on the node's address, the node's own
         * network, or a Service with internalTrafficPolicy Local.
         */
        exposure: z.enum(['HostPort', 'HostNetwork', 'Service']).default('HostPort'),
      })
      .prefault({})
      .meta({
        'x-kubernetes-validations': [
          { rule: 'self.http != self.grpc', message: 'http and grpc ports must differ' },
        ],
      }),
    security: z
      .strictObject({
        /** mTLS between agents with operator-issued, node-bound identities. */
        mtls: z.boolean().default(true),
        revokedNodes: z
          .array(z.string().min(1).max(253))
          .max(1000)
          .optional()
          .describe(
            'Nodes whose certificates every agent refuses within seconds (a list signed by the mesh CA); they get no new certificate. Remove a node to let it back in.',
          ),
        runAsUser: z.int().min(1).max(2_147_483_647).default(65532),
      })
      .prefault({}),
    access: z
      .strictObject({
        anonymous: z
          .enum(['none', 'read', 'all'])
          .default('none')
          .describe('What clients without a token may do, on every key and topic.'),
        rules: z
          .array(
            z.strictObject({
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
            }),
          )
          .max(100)
          .optional()
          .describe(
            "Who may do what; a client gets what every rule naming it or its groups gives. Default: the ServiceAccounts of the mesh's namespace may do everything.",
          ),
      })
      .prefault({})
      .describe(
        "Who may use the agents' HTTP API: clients send a projected ServiceAccount token for the audience edgemesh.p2p.dev.",
      ),
    telemetry: z
      .strictObject({
        otlpEndpoint: z
          .string()
          .max(2048)
          .regex(/^https?:\/\/[^\s]+$/)
          .optional(),
        prometheus: z
          .strictObject({ enabled: z.boolean().default(true), port: port.default(9464) })
          .prefault({}),
      })
      .prefault({}),
    transfer: z
      .strictObject({
        /** Cap on bytes per second each agent sends to peers; 0 is none. */
        uploadBytesPerSecond: z.int().min(0).default(0),
      })
      .prefault({}),
    /** Per-node capacity and roles, first match wins; nodes no rule matches get weight 1. */
    capacity: z
      .array(
        z.strictObject({
          nodeSelector: labels,
          /** Share of keys owned relative to others; 0 owns none (battery, metered, draining nodes). */
          weight: z.int().min(0).max(100),
        }),
      )
      .max(32)
      .optional(),
  })
  .meta({
    'x-kubernetes-validations': [
      {
        rule: '!has(self.telemetry) || !self.telemetry.prometheus.enabled || (self.telemetry.prometheus.port != self.ports.http && self.telemetry.prometheus.port != self.ports.grpc)',
        message: 'the Prometheus port must differ from the agent ports',
      },
    ],
  });

/** A metav1.Condition. */
export const conditionSchema = z.strictObject({
  type: z.string().max(316),
  status: z.enum(['True', 'False', 'Unknown']),
  observedGeneration: z.int().min(0).optional(),
  lastTransitionTime: z.string(),
  reason: z
    .string()
    .max(1024)
    .regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/),
  message: z.string().max(32768),
});

export const edgeMeshStatusSchema = z.strictObject({
  observedGeneration: z.int().min(0).optional(),
  conditions: z.array(conditionSchema).optional(),
  /** Nodes selected, and agents scheduled, up to date and ready there. */
  desiredAgents: z.int().min(0).optional(),
  readyAgents: z.int().min(0).optional(),
  updatedAgents: z.int().min(0).optional(),
  /** Selected nodes per zone and per region. */
  zones: z.record(z.string(), z.int().min(0)).optional(),
  regions: z.record(z.string(), z.int().min(0)).optional(),
  /** From the agents' reports on the control plane. */
  hitRatio: z.string().optional(),
  bytesFromPeers: z.int().min(0).optional(),
  bytesFromOrigin: z.int().min(0).optional(),
  distrustedPeers: z
    .int()
    .min(0)
    .optional()
    .describe('The most peers any one agent distrusts (its reputation of them fell too low).'),
  distrustedNodes: z
    .array(z.strictObject({ node: z.string().max(253), by: z.int().min(1) }))
    .max(16)
    .optional()
    .describe(
      'Nodes the agents distrust from what each verified itself (bad chunks, unsigned manifests, failures), with how many agents named each in a signed report of the last 5 minutes; the most distrusted first.',
    ),
});

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
