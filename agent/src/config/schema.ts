import { hostname } from 'node:os';
import { hostPortSchema, meshNameSchema, MIN_STORE_BYTES } from '@edgemesh/contracts';
import { en } from 'zod/locales';
import * as z from 'zod/mini';
import { MAX_OBJECT_BYTES } from '../cache/chunking.ts';
import { parseBytes } from './bytes.ts';

/*
 * Written with zod's tree-shakable "mini" API, as @edgemesh/contracts is: the classic API costs an
 * idle agent about 9 MB of memory (docs/deploy.md). English messages, as the classic API gives.
 */
z.config(en());

const bytes = z.pipe(
  z.union([z.number(), z.string()]),
  z.transform((value: number | string, ctx) => {
    const parsed = parseBytes(value);
    if (parsed === undefined) {
      ctx.issues.push({
        code: 'custom',
        input: value,
        message: `not a byte size: ${JSON.stringify(value)} (e.g. 1048576, 64Mi, 10Gi)`,
      });
      return z.NEVER;
    }
    return parsed;
  }),
);

/** A whole number, from YAML or from the strings of flags and variables, at least `min` (at most `max`). */
const int = (min: number, max?: number) =>
  z.pipe(z.coerce.number(), z.int().check(z.minimum(min), ...(max === undefined ? [] : [z.maximum(max)])));
/** true/false, also from the strings of flags and variables ("true", "1", "yes", ...). */
const bool = z.union([z.stringbool(), z.boolean()]);
const port = int(0, 65535);
const host = z.string().check(z.minLength(1));
const hostPort = hostPortSchema;

const originUrl = z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' });
const originRule = z
  .strictObject({
    prefix: z.string().check(z.maxLength(512)),
    url: originUrl,
    /**
     * A directory of request headers sent to this origin, one file each (name = header, content =
     * value; e.g. a mounted Secret), read at every fetch. Only with an https url; never sent on to a
     * redirect to another origin.
     */
    headersDir: z.optional(z.string().check(z.minLength(1))),
  })
  .check(
    z.refine((o) => o.headersDir === undefined || o.url.startsWith('https://'), {
      message: 'an origin with headersDir must be https (its headers are secrets)',
      path: ['url'],
    }),
  );
/** `{ prefix, url }`, or `prefix=url` (the form flags and variables use). */
const origin = z.union([
  originRule,
  z.pipe(
    z.pipe(
      z.string().check(z.regex(/^[^=]*=.+$/, 'expected prefix=url')),
      z.transform((s: string) => ({ prefix: s.slice(0, s.indexOf('=')), url: s.slice(s.indexOf('=') + 1) })),
    ),
    originRule,
  ),
]);

const peer = z.union([
  z.pipe(
    hostPort,
    z.transform((address: string) => ({ address, id: address })),
  ),
  z.pipe(
    z.strictObject({ address: hostPort, id: z.optional(z.string().check(z.minLength(1))) }),
    z.transform((p: { address: string; id?: string | undefined }) => ({
      address: p.address,
      id: p.id ?? p.address,
    })),
  ),
]);

/**
 * The agent's whole configuration. Every field has a default except `store.dir`. Parsed once in
 * main from file < environment < flags (see load.ts); nothing else reads the environment.
 */
export const agentConfigSchema = z.strictObject({
  /** This node's identity in the mesh. */
  nodeId: z._default(z.string().check(z.minLength(1), z.maxLength(253)), hostname()),
  /**
   * A JSON or YAML file `{ nodes: { <nodeId>: { zone, region, weight } } }` (the operator's
   * topology.yaml): this node's zone, region and weight are taken from it unless set otherwise.
   */
  topologyFile: z.optional(z.string().check(z.minLength(1))),
  /** Topology (from the node labels topology.kubernetes.io/zone and /region). */
  zone: z._default(z.string().check(z.maxLength(63)), ''),
  region: z._default(z.string().check(z.maxLength(63)), ''),
  http: z.prefault(
    z.strictObject({
      host: z._default(host, '127.0.0.1'),
      port: z._default(port, 7480),
      /**
       * While it is the client's turn (its body, the answer), a connection that moves no byte for this
       * long is closed: a stalled body, a client that stops reading. No clock runs while the server
       * works for the client; exchange streams are exempt.
       */
      idleTimeoutMs: z._default(int(1000, 3_600_000), 60_000),
      /**
       * While the server waits on the client (a body it reads, answer bytes the client's side does not
       * take), a request that moves some bytes, but fewer a second than this, over a window of 10 s
       * (or idleTimeoutMs, shorter) is reset; a silent window is added to the next (http/min-rate.ts).
       * A body or an answer trickled within the idle timeout. 0: no minimum.
       */
      minBytesPerSecond: z._default(int(0, 1_000_000_000), 1024),
      /**
       * Answer GET and HEAD of objects held here (first chunk in the hot tier) with headers computed
       * once per object version, before the API's routes (http/local-hits.ts): the same answers,
       * faster. Off: the routes (http/app.ts) answer all.
       */
      fastPath: z._default(bool, true),
    }),
    {},
  ),
  grpc: z.prefault(
    z.strictObject({
      host: z._default(host, '0.0.0.0'),
      port: z._default(port, 7481),
      /** host:port peers should dial; default: the bound address, or the host name when bound to all. */
      advertise: z.optional(hostPort),
      /** HTTP/2 flow-control window for peer streams; larger windows keep fast links full. */
      flowControlWindow: z._default(bytes, 16 * 2 ** 20),
      /**
       * Fetch chunk bodies on the bulk stream (length-prefixed frames over mutual TLS, on this same
       * port) rather than gRPC's FetchChunks; with mTLS off, or a peer without it, FetchChunks. The
       * port serves both either way.
       */
      bulkStream: z._default(bool, true),
    }),
    {},
  ),
  store: z.strictObject({
    dir: z.string().check(z.minLength(1)),
    /** At least MIN_STORE_BYTES: the store counts its database's allowance and its folders in it. */
    maxBytes: z._default(
      z.pipe(
        bytes,
        z
          .number()
          .check(z.minimum(MIN_STORE_BYTES, 'at least 4Mi: the store keeps its database and folders in it')),
      ),
      10 * 2 ** 30,
    ),
    memoryBytes: z._default(bytes, 256 * 2 ** 20),
    /** At most MAX_OBJECT_BYTES (256 GiB): what a peer's manifest may describe (cache/manifest.ts). */
    maxObjectBytes: z._default(z.pipe(bytes, z.number().check(z.maximum(MAX_OBJECT_BYTES))), 8 * 2 ** 30),
    /** Seconds; 0 keeps objects until evicted. A PUT may set its own with X-Edgemesh-Ttl. */
    defaultTtlSeconds: z._default(int(0), 0),
    fsync: z._default(bool, false),
    /** Re-hash every chunk on disk in the background after start. */
    scrubOnStart: z._default(bool, true),
    /**
     * Hours between background scrubs (every chunk re-hashed, damaged ones dropped); 0: none after
     * the one at start. Chunks sent to peers are hashed at one send in 16, so rot is found by these.
     */
    scrubIntervalHours: z._default(int(0, 500), 24),
    sweepIntervalSeconds: z._default(int(1), 30),
  }),
  /** Static peers, used alongside membership: host:port strings or { address, id }. */
  peers: z._default(z.array(peer), []),
  /** The mesh this agent belongs to: namespaces its control-plane subjects. */
  mesh: z._default(meshNameSchema, 'default'),
  /** Relative capacity for owning keys (0: owns none, e.g. battery or metered nodes). */
  weight: z._default(z.pipe(z.coerce.number(), z.number().check(z.minimum(0), z.maximum(1000))), 1),
  /** Origin rules: a key starting with `prefix` that no node holds is fetched from `url` + the rest of the key. */
  origins: z._default(z.array(origin), []),
  replication: z.prefault(
    z
      .strictObject({
        /** Owners per key (R): they keep its manifest and a copy. */
        factor: z._default(int(1, 16), 3),
        /** Copies (the writer's included) that exist before a PUT answers 201; the rest follow in the background. */
        writeCopies: z._default(int(1, 16), 1),
        /** How long one replica may take to make; an origin fetch waits this long for its answer and for each next piece of the body. */
        timeoutMs: z._default(int(100), 60_000),
      })
      .check(
        z.refine((r) => r.writeCopies <= r.factor, {
          message: 'writeCopies cannot exceed factor',
          path: ['writeCopies'],
        }),
      ),
    {},
  ),
  controlPlane: z.prefault(
    z.strictObject({
      /** NATS server URLs; empty: no control plane (static peers only). */
      servers: z._default(
        z.array(z.string().check(z.regex(/^(nats|tls):\/\/[^\s]+$/, 'expected nats://host:port'))),
        [],
      ),
      /**
       * A NATS credentials file (a user JWT and its seed, as `nats` tools write them), read at every
       * connect; in Kubernetes the operator makes one per mesh, allowed the mesh's own subjects only.
       */
      credentialsFile: z.optional(z.string().check(z.minLength(1))),
      /**
       * The certificate (PEM) the NATS server is checked by, for a server that serves TLS with one no
       * public CA signed (the chart's NATS); the connection is then TLS or nothing.
       */
      caFile: z.optional(z.string().check(z.minLength(1))),
      /** How often this node publishes its running totals (node.stats) for the operator. */
      statsIntervalMs: z._default(int(1000), 10_000),
    }),
    {},
  ),
  membership: z.prefault(
    z.strictObject({
      probeIntervalMs: z._default(int(50), 500),
      probeTimeoutMs: z._default(int(10), 500),
      indirectProbes: z._default(int(0, 10), 2),
      suspicionTimeoutMs: z._default(int(100), 1000),
      announceIntervalMs: z._default(int(100), 2000),
      /**
       * How long a dead member is remembered (a stale announcement cannot bring it back meanwhile),
       * and an announced one that never answered is kept. At least 5 s: a newcomer's first answer may
       * take a few probe timeouts.
       */
      deadRetentionMs: z._default(int(5000), 60_000),
    }),
    {},
  ),
  transfer: z.prefault(
    z.strictObject({
      /** How long to wait for a peer's answer before trying the next one. */
      peerTimeoutMs: z._default(int(1), 5000),
      /**
       * The most bytes per second this node sends to peers, shared fairly among the zones asking
       * (0: no limit). Keeps the mesh off a constrained uplink.
       */
      uploadBytesPerSecond: z._default(int(0), 0),
    }),
    {},
  ),
  security: z.prefault(
    z
      .strictObject({
        /**
         * Mutual TLS on every connection between agents, with a node certificate from this mesh's CA
         * (default on). Off: plaintext and anonymous peers, for a trusted lab only.
         */
        mtls: z._default(bool, true),
        /**
         * A file-based CA (outside Kubernetes: the local mesh, tests): this agent makes its key and
         * signs its own certificate with it. Its files are read again at every renewal.
         */
        ca: z.optional(
          z.strictObject({
            certFile: z.string().check(z.minLength(1)),
            keyFile: z.string().check(z.minLength(1)),
            /** The namespace the certificates name (the mesh's name is `mesh`). */
            namespace: z._default(z.string().check(z.regex(/^[A-Za-z0-9_.-]{1,63}$/)), 'local'),
          }),
        ),
        /**
         * The operator's issuance endpoint (Kubernetes; the operator writes this): the agent sends
         * its certificate request with its projected ServiceAccount token.
         */
        issuer: z.optional(
          z.strictObject({
            url: z.url({ protocol: /^https$/, error: 'expected an https URL' }),
            /** The projected ServiceAccount token (audience edgemesh.p2p.dev), read at every request. */
            tokenFile: z.string().check(z.minLength(1)),
            /** The endpoint's serving certificate, the only one trusted for it. */
            caFile: z.string().check(z.minLength(1)),
            /** The EdgeMesh this agent belongs to: its namespace and name. */
            namespace: z.string().check(z.minLength(1), z.maxLength(253)),
            name: z.string().check(z.minLength(1), z.maxLength(253)),
          }),
        ),
        /**
         * The mesh's trust bundle: its CA certificates (PEM, more than one during a CA rotation),
         * read again every few seconds. Default: the file CA's certificate.
         */
        trustBundleFile: z.optional(z.string().check(z.minLength(1))),
        /**
         * The mesh's revocation list (the trust ConfigMap's revoked.json; the operator writes this),
         * signed by the mesh CA, read again every few seconds; lists also come over NATS.
         */
        revocationsFile: z.optional(z.string().check(z.minLength(1))),
        /** Life of this node's certificates (renewed at two thirds of it). */
        certificateTtlSeconds: z._default(int(10, 86_400), 86_400),
      })
      .check(
        z.refine((s) => !s.mtls || s.ca !== undefined || s.issuer !== undefined, {
          message:
            'mTLS needs a node certificate: set security.ca (a file-based CA; `npm start` makes one) or security.issuer (the operator sets it), or security.mtls=false for a trusted lab',
          path: ['ca'],
        }),
        z.refine((s) => !(s.ca && s.issuer), {
          message: 'set security.ca or security.issuer, not both',
          path: ['issuer'],
        }),
        z.refine((s) => !s.issuer || s.trustBundleFile !== undefined, {
          message: 'with security.issuer, security.trustBundleFile names the mesh’s CA certificates',
          path: ['trustBundleFile'],
        }),
      ),
    {},
  ),
  access: z.prefault(
    z.strictObject({
      /** Static client tokens: a YAML or JSON file `{ tokens: [{ name, token }] }`, read again as it changes. */
      tokensFile: z.optional(z.string().check(z.minLength(1))),
      /** Kubernetes ServiceAccount tokens (projected, for `audience`), checked against the cluster's keys. */
      serviceAccounts: z.optional(
        z.strictObject({
          issuer: z.string().check(z.minLength(1), z.maxLength(2048)),
          jwksFile: z.string().check(z.minLength(1)),
          audience: z._default(z.string().check(z.minLength(1)), 'edgemesh.p2p.dev'),
        }),
      ),
      /** What clients without a token may do, on every key and topic (default: nothing). */
      anonymous: z._default(z.enum(['none', 'read', 'all']), 'none'),
      /** Who may do what (a client gets what every rule naming it or its groups gives). */
      rules: z._default(
        z.array(
          z.strictObject({
            subjects: z.array(z.string().check(z.minLength(1), z.maxLength(320))).check(z.minLength(1)),
            verbs: z.array(z.enum(['read', 'write', 'purge', 'send', 'receive'])).check(z.minLength(1)),
            prefixes: z._default(z.array(z.string().check(z.maxLength(512))).check(z.minLength(1)), ['']),
          }),
        ),
        [
          {
            subjects: ['authenticated'],
            verbs: ['read', 'write', 'purge', 'send', 'receive'],
            prefixes: [''],
          },
        ],
      ),
      /** Serve /metrics without a token (for Prometheus). */
      publicMetrics: z._default(bool, true),
      /** Requests one client may have in progress at once; more are answered 429. */
      maxConcurrentPerClient: z._default(int(1, 100_000), 256),
      /**
       * Requests all anonymous clients together may have in progress at once (each address is a client
       * of its own; an IPv6 one by its /64); more are answered 429.
       */
      maxConcurrentAnonymous: z._default(int(1, 1_000_000), 1024),
      /** Requests per second one client may start, in bursts of as many (0: no limit); more: 429. */
      requestsPerSecondPerClient: z._default(int(0, 1_000_000), 0),
    }),
    {},
  ),
  telemetry: z.prefault(
    z.strictObject({
      /**
       * An OTLP/HTTP endpoint for traces and metrics (e.g. http://otel-collector:4318);
       * OTEL_EXPORTER_OTLP_ENDPOINT is used when this is not set. No endpoint: no tracing, and metrics
       * only at /metrics.
       */
      otlpEndpoint: z.optional(z.url({ protocol: /^https?$/ })),
    }),
    {},
  ),
  log: z.prefault(
    z.strictObject({
      level: z._default(z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), 'info'),
    }),
    {},
  ),
});

export type AgentConfig = z.output<typeof agentConfigSchema>;
export type AgentConfigInput = z.input<typeof agentConfigSchema>;
export type PeerConfig = AgentConfig['peers'][number];
