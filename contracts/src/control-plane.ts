import * as z from 'zod/mini';

/**
 * The control plane's contract: NATS subjects per mesh and the events on them. Agents and the
 * operator both import this; nothing else defines a subject or an event shape. Object bytes never
 * travel here.
 *
 * Trust: events are hints. A receiver validates every message against these schemas (drops and counts
 * what fails) and confirms anything that matters over the data plane before acting on it: a member
 * announced here is used only after a direct gRPC probe of its address answers with the same node id.
 */

/** Version of the event envelope; receivers drop other versions. */
export const EVENT_VERSION = 1;
/** Largest control-plane message accepted, in bytes. */
export const MAX_EVENT_BYTES = 64 * 1024;

/*
 * Schemas use zod's tree-shakable "mini" API: the agent imports only these and its configuration's,
 * and the classic API costs an idle agent about 9 MB of memory (docs/deploy.md). Numbers are finite
 * in zod 4 without saying so.
 */

/**
 * NATS headers that carry a control-plane event's signature (the exact bytes of the event, with its
 * sender's node key) and the sender's certificate (base64 DER); the event format itself is unchanged.
 */
export const SIGNER_HEADER = 'Edgemesh-Signer';
export const SIGNATURE_HEADER = 'Edgemesh-Signature';

/** A mesh's name: it becomes a NATS subject token. */
export const meshNameSchema = z
  .string()
  .check(z.regex(/^[A-Za-z0-9_-]{1,63}$/, 'mesh names are 1-63 of [A-Za-z0-9_-]'));
const meshName = meshNameSchema;
const nodeId = z.string().check(z.minLength(1), z.maxLength(253));
const label = z.string().check(z.maxLength(63));
/** A data-plane address, `host:port` (IPv6 as `[addr]:port`). */
export const hostPortSchema = z
  .string()
  .check(
    z.maxLength(300),
    z.regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port (IPv6 as [addr]:port)'),
  );
const hostPort = hostPortSchema;
/** A whole number, at least 0. */
const count = z.int().check(z.minimum(0));

/** Vivaldi network coordinate (see agent/src/overlay/vivaldi.ts). */
export const coordinateSchema = z.strictObject({
  vec: z.array(z.number()).check(z.length(8)),
  height: z.number().check(z.minimum(0)),
  error: z.number().check(z.minimum(0)),
});

/** What a member says about itself. */
export const memberSchema = z.strictObject({
  nodeId,
  zone: label,
  region: label,
  /** Where peers reach its gRPC data plane. */
  grpc: hostPort,
  /** Relative capacity for owning keys; 0 owns none. */
  weight: z.number().check(z.minimum(0), z.maximum(1000)),
  /** Raised by the member to refute suspicion; a higher one supersedes. */
  incarnation: count,
  coordinate: z.optional(coordinateSchema),
});
export type MemberInfo = z.infer<typeof memberSchema>;

const envelope = <T extends string, B extends z.ZodMiniType>(type: T, body: B) =>
  z.strictObject({
    v: z.literal(EVENT_VERSION),
    type: z.literal(type),
    mesh: meshName,
    /** The sending node (or `operator`). Claimed, not proven: see the trust note above. */
    from: nodeId,
    sentAtMs: count,
    body,
  });

export const eventSchema = z.discriminatedUnion('type', [
  /** A member is up, or still up (sent at start and periodically). */
  envelope('member.announce', z.strictObject({ member: memberSchema })),
  /** A member is leaving on purpose (graceful shutdown). */
  envelope('member.leave', z.strictObject({ nodeId, incarnation: count })),
  /** A member could not reach `nodeId`, directly or through others. Receivers probe it themselves. */
  envelope('member.suspect', z.strictObject({ nodeId, incarnation: count })),
  /** `key` was deleted mesh-wide at `purgedAtMs`: drop versions created at or before then. */
  envelope(
    'object.purge',
    z.strictObject({
      key: z.string().check(z.minLength(1), z.maxLength(512)),
      purgedAtMs: count,
      /**
       * The purging node's signature over the key and the time (agent/src/security/node-signer.ts),
       * kept with the tombstone so that a later "purged" answer can show it.
       */
      signature: z.optional(
        z.strictObject({
          certificate: z.string().check(z.maxLength(8192)),
          value: z.string().check(z.maxLength(256)),
          /** The client that asked for the purge (signed too). */
          by: z.optional(z.string().check(z.maxLength(320))),
        }),
      ),
    }),
  ),
  /**
   * A node's running totals since it started (sent periodically), for the operator's mesh figures.
   * A restarted node starts again from zero.
   */
  envelope(
    'node.stats',
    z.strictObject({
      hits: count,
      misses: count,
      bytesFromPeers: count,
      bytesFromOrigin: count,
      startedAtMs: count,
      /** Peers this node's reputation now distrusts (it does not fetch from them). */
      distrustedPeers: z.optional(count),
      /**
       * The nodes this node distrusts from what it verified itself (the most distrusted first):
       * other agents avoid a node that two of them report; the operator sums them in the status.
       */
      distrusted: z.optional(z.array(nodeId).check(z.maxLength(64))),
    }),
  ),
  /**
   * The nodes whose certificates every agent of the mesh refuses from now on, signed by the mesh's
   * CA (the operator keeps it); a later list replaces an earlier one.
   */
  envelope(
    'mesh.revocations',
    z.strictObject({
      nodes: z.array(nodeId).check(z.maxLength(1000)),
      issuedAtMs: count,
      /** The mesh CA's ECDSA signature over revocationSignedBytes, base64. */
      signature: z.string().check(z.maxLength(256)),
    }),
  ),
  /** The full member list as the operator knows it (bootstrap and repair of membership). */
  envelope('members.snapshot', z.strictObject({ members: z.array(memberSchema).check(z.maxLength(10_000)) })),
]);
export type ControlEvent = z.infer<typeof eventSchema>;
export type ControlEventType = ControlEvent['type'];

/** The bytes a revocation list's signature covers (the mesh is the control-plane mesh name). */
export function revocationSignedBytes(
  mesh: string,
  nodes: readonly string[],
  issuedAtMs: number,
): Uint8Array {
  return Buffer.from(JSON.stringify(['edgemesh.revocations.v1', mesh, [...nodes].sort(), issuedAtMs]));
}

/** Subjects, all under `edgemesh.<mesh>.`. */
export function subjects(mesh: string) {
  meshName.parse(mesh);
  const base = `edgemesh.${mesh}`;
  return {
    /** Subscribe here for everything of this mesh. */
    all: `${base}.>`,
    members: `${base}.members`,
    objects: `${base}.objects`,
    stats: `${base}.stats`,
  } as const;
}

/** The subject an event of `type` is published on. */
export function subjectFor(mesh: string, type: ControlEventType): string {
  if (type === 'node.stats') return subjects(mesh).stats;
  return type.startsWith('member') || type === 'mesh.revocations'
    ? subjects(mesh).members
    : subjects(mesh).objects;
}

export type DecodeResult =
  | { ok: true; event: ControlEvent }
  | { ok: false; reason: 'too-large' | 'not-json' | 'invalid' | 'wrong-mesh' };

/** Validates a received message; never throws. */
export function decodeEvent(mesh: string, data: Uint8Array): DecodeResult {
  if (data.length > MAX_EVENT_BYTES) return { ok: false, reason: 'too-large' };
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.length).toString('utf8'));
  } catch {
    return { ok: false, reason: 'not-json' }; // garbage: the caller counts it
  }
  const parsed = eventSchema.safeParse(raw);
  if (!parsed.success) return { ok: false, reason: 'invalid' };
  if (parsed.data.mesh !== mesh) return { ok: false, reason: 'wrong-mesh' };
  return { ok: true, event: parsed.data };
}

export function encodeEvent(event: ControlEvent): Uint8Array {
  const data = Buffer.from(JSON.stringify(eventSchema.parse(event)));
  if (data.length > MAX_EVENT_BYTES)
    throw new RangeError(`event of ${data.length} bytes exceeds ${MAX_EVENT_BYTES}`);
  return data;
}
