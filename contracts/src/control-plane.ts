import * as z from 'zod/mini';
import { acceptsEvent, PROTOCOL, type ProtocolRange } from './protocol.ts';

/**
 * The control plane's contract: NATS subjects per mesh and the events on them. Agents and the
 * operator both import this; nothing else defines a subject or an event shape. Object bytes never
 * travel here.
 *
 * Trust: events are hints. A receiver validates every message against these schemas (drops and counts
 * what fails) and confirms anything that matters over the data plane before acting on it: a member
 * announced here is used only after a direct gRPC probe of its address answers with the same node id.
 */

/**
 * The protocol major of the event envelope this build sends (`v`). The sender's minor goes in
 * `minor` (absent: 0). Receivers take any minor of a major they speak (protocol.ts, acceptsEvent)
 * and drop the rest, counted as `unsupported-version`.
 */
export const EVENT_VERSION = PROTOCOL.max.major;

/**
 * The envelope's version fields for a sender speaking `range`: its max (a minor of 0 is left out, so
 * a 1.0 event is byte for byte what builds before versions sent).
 */
export function eventVersion(range: ProtocolRange = PROTOCOL): { v: number; minor?: number } {
  const { major, minor } = range.max;
  return minor > 0 ? { v: major, minor } : { v: major };
}
/** Largest control-plane message accepted, in bytes. */
export const MAX_EVENT_BYTES = 64 * 1024;

/*
 * Schemas use zod's tree-shakable "mini" API: the agent imports only these and its configuration's,
 * and the classic API costs an idle agent about 9 MB of memory (docs/deploy.md). Numbers are finite
 * in zod 4 without saying so.
 *
 * Objects strip keys they do not know rather than refuse them: a sender one minor version newer may
 * add optional fields, and its events must still count here (docs/upgrades.md). What is known is
 * still checked in full, and the whole message is bounded (MAX_EVENT_BYTES). Signatures cover the
 * bytes as received, so stripping changes nothing they prove.
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
export const coordinateSchema = z.object({
  vec: z.array(z.number()).check(z.length(8)),
  height: z.number().check(z.minimum(0)),
  error: z.number().check(z.minimum(0)),
});

/** What a member says about itself. */
export const memberSchema = z.object({
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
  z.object({
    /** The sender's protocol major. */
    v: z.int().check(z.minimum(1), z.maximum(9999)),
    /** The sender's protocol minor; absent: 0 (as 1.0 senders and builds before versions send). */
    minor: z.optional(z.int().check(z.minimum(0), z.maximum(9999))),
    type: z.literal(type),
    mesh: meshName,
    /** The sending node (or `operator`). Claimed, not proven: see the trust note above. */
    from: nodeId,
    sentAtMs: count,
    body,
  });

export const eventSchema = z.discriminatedUnion('type', [
  /** A member is up, or still up (sent at start and periodically). */
  envelope('member.announce', z.object({ member: memberSchema })),
  /** A member is leaving on purpose (graceful shutdown). */
  envelope('member.leave', z.object({ nodeId, incarnation: count })),
  /** A member could not reach `nodeId`, directly or through others. Receivers probe it themselves. */
  envelope('member.suspect', z.object({ nodeId, incarnation: count })),
  /** `key` was deleted mesh-wide at `purgedAtMs`: drop versions created at or before then. */
  envelope(
    'object.purge',
    z.object({
      key: z.string().check(z.minLength(1), z.maxLength(512)),
      purgedAtMs: count,
      /**
       * The purging node's signature over the key and the time (agent/src/security/node-signer.ts),
       * kept with the tombstone so that a later "purged" answer can show it.
       */
      signature: z.optional(
        z.object({
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
    z.object({
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
    z.object({
      nodes: z.array(nodeId).check(z.maxLength(1000)),
      issuedAtMs: count,
      /** The mesh CA's ECDSA signature over revocationSignedBytes, base64. */
      signature: z.string().check(z.maxLength(256)),
    }),
  ),
  /**
   * Meant as the operator's full member list (bootstrap and repair of membership), but no build
   * sends it, and agents refuse it (counted `members-snapshot`): any node of the mesh could sign one
   * and introduce members nobody runs. Kept in the schema so that it stays a known type (refused by
   * membership, not dropped as `unknown-type`) for agents one release apart; a sender would need a
   * signature only the mesh's CA can make, as `mesh.revocations` has.
   */
  envelope('members.snapshot', z.object({ members: z.array(memberSchema).check(z.maxLength(10_000)) })),
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

const EVENT_TYPES = new Set<unknown>(eventSchema._zod.propValues.type);

export type DecodeResult =
  | { ok: true; event: ControlEvent }
  | {
      ok: false;
      /**
       * unsupported-version: of a protocol major the receiver does not speak, or older than its min;
       * unknown-type: a type this build does not know (a newer minor's, say).
       */
      reason: 'too-large' | 'not-json' | 'invalid' | 'wrong-mesh' | 'unsupported-version' | 'unknown-type';
    };

/**
 * Validates a received message for a receiver speaking `protocol` (default: this build's);
 * never throws. Unknown fields are stripped from the event returned.
 */
export function decodeEvent(
  mesh: string,
  data: Uint8Array,
  protocol: ProtocolRange = PROTOCOL,
): DecodeResult {
  if (data.length > MAX_EVENT_BYTES) return { ok: false, reason: 'too-large' };
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.length).toString('utf8'));
  } catch {
    return { ok: false, reason: 'not-json' }; // garbage: the caller counts it
  }
  const {
    v,
    minor = 0,
    type,
  } = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  const part = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  if (part(v) && part(minor)) {
    if (!acceptsEvent(protocol, { major: v as number, minor: minor as number }))
      return { ok: false, reason: 'unsupported-version' };
    if (typeof type === 'string' && !EVENT_TYPES.has(type)) return { ok: false, reason: 'unknown-type' };
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
