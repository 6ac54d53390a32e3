import { hostname } from 'node:os';
import { hostPortSchema, meshNameSchema } from '@edgemesh/contracts';
import { z } from 'zod';
import { parseBytes } from './bytes.ts';

const bytes = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const parsed = parseBytes(value);
  if (parsed === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `not a byte size: ${JSON.stringify(value)} (e.g. 1048576, 64Mi, 10Gi)`,
    });
    return z.NEVER;
  }
  return parsed;
});

const port = z.coerce.number().int().min(0).max(65535);
const host = z.string().min(1);
const hostPort = hostPortSchema;

const originUrl = z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' });
/** `{ prefix, url }`, or `prefix=url` (the form flags and variables use). */
const origin = z.union([
  z.strictObject({ prefix: z.string().max(512), url: originUrl }),
  z
    .string()
    .regex(/^[^=]*=.+$/, 'expected prefix=url')
    .transform((s) => ({ prefix: s.slice(0, s.indexOf('=')), url: s.slice(s.indexOf('=') + 1) }))
    .pipe(z.strictObject({ prefix: z.string().max(512), url: originUrl })),
]);

const peer = z.union([
  hostPort.transform((address) => ({ address, id: address })),
  z
    .strictObject({ address: hostPort, id: z.string().min(1).optional() })
    .transform((p) => ({ address: p.address, id: p.id ?? p.address })),
]);

/**
 * The agent's whole configuration. Every field has a default except `store.dir`. Parsed once in
 * main from file < environment < flags (see load.ts); nothing else reads the environment.
 */
export const agentConfigSchema = z.strictObject({
  /** This node's identity in the mesh. */
  nodeId: z.string().min(1).max(253).default(hostname()),
  /**
   * A JSON or YAML file `{ nodes: { <nodeId>: { zone, region, weight } } }` (the operator's
   * topology.yaml): this node's zone, region and weight are taken from it unless set otherwise.
   */
  topologyFile: z.string().min(1).optional(),
  /** Topology (from the node labels topology.kubernetes.io/zone and /region). */
  zone: z.string().max(63).default(''),
  region: z.string().max(63).default(''),
  http: z
    .strictObject({
      host: host.default('127.0.0.1'),
      port: port.default(7480),
    })
    .prefault({}),
  grpc: z
    .strictObject({
      host: host.default('0.0.0.0'),
      port: port.default(7481),
      /** host:port peers should dial; default: the bound address, or the host name when bound to all. */
      advertise: hostPort.optional(),
      /** HTTP/2 flow-control window for peer streams; larger windows keep fast links full. */
      flowControlWindow: bytes.default(16 * 2 ** 20),
    })
    .prefault({}),
  store: z.strictObject({
    dir: z.string().min(1),
    maxBytes: bytes.default(10 * 2 ** 30),
    memoryBytes: bytes.default(256 * 2 ** 20),
    maxObjectBytes: bytes.default(8 * 2 ** 30),
    /** Seconds; 0 keeps objects until evicted. A PUT may set its own with X-Edgemesh-Ttl. */
    defaultTtlSeconds: z.coerce.number().int().min(0).default(0),
    fsync: z.stringbool().or(z.boolean()).default(false),
    /** Re-hash every chunk on disk in the background after start. */
    scrubOnStart: z.stringbool().or(z.boolean()).default(true),
    sweepIntervalSeconds: z.coerce.number().int().min(1).default(30),
  }),
  /** Static peers, used alongside membership: host:port strings or { address, id }. */
  peers: z.array(peer).default([]),
  /** The mesh this agent belongs to: namespaces its control-plane subjects. */
  mesh: meshNameSchema.default('default'),
  /** Relative capacity for owning keys (0: owns none, e.g. battery or metered nodes). */
  weight: z.coerce.number().min(0).max(1000).default(1),
  /** Origin rules: a key starting with `prefix` that no node holds is fetched from `url` + the rest of the key. */
  origins: z.array(origin).default([]),
  replication: z
    .strictObject({
      /** Owners per key (R): they keep its manifest and a copy. */
      factor: z.coerce.number().int().min(1).max(16).default(3),
      /** Copies (the writer's included) that exist before a PUT answers 201; the rest follow in the background. */
      writeCopies: z.coerce.number().int().min(1).max(16).default(1),
      /** How long one replica may take to make. */
      timeoutMs: z.coerce.number().int().min(100).default(60_000),
    })
    .refine((r) => r.writeCopies <= r.factor, {
      message: 'writeCopies cannot exceed factor',
      path: ['writeCopies'],
    })
    .prefault({}),
  controlPlane: z
    .strictObject({
      /** NATS server URLs; empty: no control plane (static peers only). */
      servers: z.array(z.string().regex(/^(nats|tls):\/\/[^\s]+$/, 'expected nats://host:port')).default([]),
      /** How often this node publishes its running totals (node.stats) for the operator. */
      statsIntervalMs: z.coerce.number().int().min(1000).default(10_000),
    })
    .prefault({}),
  membership: z
    .strictObject({
      probeIntervalMs: z.coerce.number().int().min(50).default(500),
      probeTimeoutMs: z.coerce.number().int().min(10).default(500),
      indirectProbes: z.coerce.number().int().min(0).max(10).default(2),
      suspicionTimeoutMs: z.coerce.number().int().min(100).default(1000),
      announceIntervalMs: z.coerce.number().int().min(100).default(2000),
    })
    .prefault({}),
  transfer: z
    .strictObject({
      /** How long to wait for a peer's answer before trying the next one. */
      peerTimeoutMs: z.coerce.number().int().min(1).default(5000),
      /**
       * The most bytes per second this node sends to peers, shared fairly among the zones asking
       * (0: no limit). Keeps the mesh off a constrained uplink.
       */
      uploadBytesPerSecond: z.coerce.number().int().min(0).default(0),
    })
    .prefault({}),
  telemetry: z
    .strictObject({
      /**
       * An OTLP/HTTP endpoint for traces and metrics (e.g. http://otel-collector:4318);
       * OTEL_EXPORTER_OTLP_ENDPOINT is used when this is not set. No endpoint: no tracing, and metrics
       * only at /metrics.
       */
      otlpEndpoint: z.url({ protocol: /^https?$/ }).optional(),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .prefault({}),
});

export type AgentConfig = z.output<typeof agentConfigSchema>;
export type AgentConfigInput = z.input<typeof agentConfigSchema>;
export type PeerConfig = AgentConfig['peers'][number];
