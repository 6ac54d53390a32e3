import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import protobuf, {
  type IConversionOptions,
  type INamespace,
  type Root,
  type Type,
} from 'protobufjs/light.js';
import { MAX_CHUNK_SIZE } from '../cache/chunking.ts';
import { type Manifest, type NodeSignature, parseSignature } from '../cache/manifest.ts';
import type { Coordinate } from '../domain.ts';
import { decodePiece, encodePiece } from './piece-codec.ts';

/**
 * The .proto is the contract. Run from the sources, the agent parses it from `agent/proto/`; the
 * bundle that scripts/build.ts makes (as in the container image) finds it beside itself in
 * `dist/proto/`, with the same parsed at build time (PEER_DESCRIPTOR), which it loads instead.
 */
export const PEER_PROTO = [`../../proto/edgemesh/peer/v1/peer.proto`, `./proto/edgemesh/peer/v1/peer.proto`]
  .map((path) => fileURLToPath(new URL(path, import.meta.url)))
  .find((path) => existsSync(path)) as string;

/**
 * Pieces are at most this large. Chunks are sent whole (one message each): splitting would cost the
 * receiver a copy to reassemble. Receivers still accept a chunk cut into several pieces.
 */
export const PIECE_SIZE = MAX_CHUNK_SIZE;
/**
 * The most keys one Release call may name (at most 512 KiB of keys): a node that evicted more tells
 * its owners in several calls.
 */
export const MAX_RELEASED_KEYS = 1024;
/** The most chunks one FetchChunks call may ask for. */
export const MAX_DIGESTS_PER_FETCH = 4096;
/**
 * The largest message of the Peer service but a ChunkPiece, and so the most a peer may make grpc-js
 * buffer and decode (the server's limit runs before any handler, so before a call is authenticated):
 * every request a server receives, and every answer but FetchChunks' a client receives. No request
 * carries chunk bytes (Replicate names a source and a root; the owner pulls the chunks). The largest
 * messages are a manifest's, bounded by MAX_CHUNKS (65,536 digests of 34 bytes on the wire) with at
 * most 64 holders (GetManifestResponse, Hold, Watch's last event), a Watch's first event (as many
 * digests, and as many chunk indexes of at most 3 bytes), 2.2 and 2.3 MiB, and a Deliver of
 * MAX_EXCHANGE_BYTES (1 MiB); peer-server.test.ts encodes each at its largest. 4 MiB, gRPC's own
 * default, leaves room. FetchChunks answers (pieces of up to PIECE_SIZE) travel on a connection of
 * their own (peer-client.ts), with CHUNK_MESSAGE_BYTES.
 */
export const MAX_CONTROL_MESSAGE_BYTES = 4 * 2 ** 20;
/** The largest ChunkPiece message: a whole chunk and its framing. */
export const CHUNK_MESSAGE_BYTES = PIECE_SIZE + 1024;

/**
 * The .proto parsed ahead of time, as protobufjs JSON: scripts/build.ts writes it beside the .proto
 * it copies next to the bundle (scripts/build.test.ts checks that it gives the same service). Parsing
 * the .proto at start runs protobufjs's tokenizer once per character (10,000 calls), which V8 now and
 * then optimizes with TurboFan, paging in about 5 MiB of compiler code a freshly started agent
 * otherwise does without (docs/deploy.md). Looked for beside the bundle only, so that no stray copy in
 * the repo can stand in for the .proto when run from the sources.
 */
export const PEER_DESCRIPTOR = fileURLToPath(new URL('./proto/edgemesh/peer/v1/peer.json', import.meta.url));

/**
 * How messages become JavaScript objects: 64-bit fields as numbers (the agent's are times and counts,
 * all under 2^53), enums by name, and every field present (its default when the sender left it out).
 * Field names in lowerCamelCase (protobufjs's default, `keepCase: false`), the descriptor's too.
 */
export const PEER_CONVERSION: IConversionOptions = { longs: Number, enums: String, defaults: true };

/**
 * The peer protocol's types: from the descriptor with protobufjs's light build (no .proto parser, no
 * descriptor.proto reflection), else, run from the sources, from the .proto with the full build, which
 * only then is imported. @grpc/proto-loader is not used: it encodes a FileDescriptorProto of the whole
 * file for every type (for gRPC reflection, which the agent does not serve), loading descriptor.proto's
 * own types and the parser to do it: about 1.3 MiB of an idle agent (docs/deploy.md).
 */
export const peerRoot: Root = existsSync(PEER_DESCRIPTOR)
  ? protobuf.Root.fromJSON(JSON.parse(readFileSync(PEER_DESCRIPTOR, 'utf8')) as INamespace)
  : new (await import('protobufjs')).default.Root().loadSync(PEER_PROTO, { keepCase: false });
peerRoot.resolveAll();

/** Writes a message as gRPC sends it; throws on a value protobufjs cannot take as the type. */
function serializer(type: Type): (value: unknown) => Buffer {
  return (value) => {
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      throw new TypeError(`Failed to serialize message: expected an object of ${type.name}'s structure`);
    const bytes = type.encode(type.fromObject(value)).finish();
    return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

/** Reads a message as received; throws (a gRPC INTERNAL to the caller) on bytes that are not one. */
function deserializer(type: Type): (bytes: Buffer) => unknown {
  return (bytes) => type.toObject(type.decode(bytes), PEER_CONVERSION);
}

/** A service of `root` as grpc-js takes it: each method's path, streaming, codecs and lowerCamelCase name. */
export function serviceDefinition(root: Root, name: string): ServiceDefinition {
  const service = root.lookupService(name);
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methodsArray) {
    const request = method.resolvedRequestType as Type;
    const response = method.resolvedResponseType as Type;
    definition[method.name] = {
      path: `/${name}/${method.name}`,
      requestStream: method.requestStream === true,
      responseStream: method.responseStream === true,
      requestSerialize: serializer(request),
      requestDeserialize: deserializer(request),
      responseSerialize: serializer(response),
      responseDeserialize: deserializer(response),
      // The name handlers (peer-server.ts) and clients may use as well: getManifest for GetManifest.
      originalName: method.name.charAt(0).toLowerCase() + method.name.slice(1),
    };
  }
  return definition;
}

const generated = serviceDefinition(peerRoot, 'edgemesh.peer.v1.Peer');

/** The Peer service, with FetchChunks' responses on the zero-copy piece codec. */
export const peerService: ServiceDefinition = {
  ...generated,
  FetchChunks: {
    ...(generated.FetchChunks as MethodDefinition<unknown, unknown>),
    responseSerialize: encodePiece,
    responseDeserialize: decodePiece,
  } as MethodDefinition<unknown, unknown>,
};

/** Manifest as protobuf-js sees it (bytes as Buffers, 64-bit fields as Numbers). */
export interface WireManifest {
  key: string;
  size: number;
  chunkSize: number;
  chunks: Buffer[];
  root: Buffer;
  createdAtMs: number;
  expiresAtMs: number;
  contentType: string;
  /** The signer's certificate (DER) and signature; empty when unsigned. */
  signerCertificate?: Buffer;
  signature?: Buffer;
}

export function toWire(m: Manifest): WireManifest {
  return {
    key: m.key,
    size: m.size,
    chunkSize: m.chunkSize,
    chunks: m.chunks.map((c) => Buffer.from(c, 'hex')),
    root: Buffer.from(m.root, 'hex'),
    createdAtMs: m.createdAtMs,
    expiresAtMs: m.expiresAtMs ?? 0,
    contentType: m.contentType ?? '',
    ...(m.signature
      ? {
          signerCertificate: Buffer.from(m.signature.certificate, 'base64'),
          signature: Buffer.from(m.signature.value, 'base64'),
        }
      : {}),
  };
}

/** A Signature message as protobuf-js sees it. */
export interface WireSignature {
  certificate?: Buffer;
  value?: Buffer;
  by?: string;
}

export const signatureToWire = (s: NodeSignature): WireSignature => ({
  certificate: Buffer.from(s.certificate, 'base64'),
  value: Buffer.from(s.value, 'base64'),
  ...(s.by ? { by: s.by } : {}),
});

/** The inverse of signatureToWire, still unverified; undefined when absent or malformed. */
export const signatureFromWire = (w: WireSignature | null | undefined): NodeSignature | undefined =>
  w?.certificate?.length && w.value?.length
    ? parseSignature({
        certificate: Buffer.from(w.certificate).toString('base64'),
        value: Buffer.from(w.value).toString('base64'),
        ...(w.by ? { by: w.by } : {}),
      })
    : undefined;

/** GetManifestResponse as protobuf-js sees it. */
export interface WireManifestAnswer {
  manifest?: WireManifest | null;
  holders?: { nodeId: string; grpc: string }[];
  holds?: boolean;
  purgedAtMs?: number;
  inProgress?: boolean;
  purgeSignature?: WireSignature | null;
}

/** WatchEvent as protobuf-js sees it. */
export interface WireWatchEvent {
  head?: WireManifest | null;
  firstDigest?: number;
  digests?: Buffer[];
  have?: number[];
  peers?: { nodeId: string; grpc: string }[];
  manifest?: WireManifest | null;
}

/** The inverse of toWire, still untrusted: pass the result through parseManifest. */
export function fromWire(w: WireManifest): Record<string, unknown> {
  return {
    key: w.key,
    size: Number(w.size),
    chunkSize: Number(w.chunkSize),
    chunks: (w.chunks ?? []).map((c) => Buffer.from(c).toString('hex')),
    root: Buffer.from(w.root ?? []).toString('hex'),
    createdAtMs: Number(w.createdAtMs),
    ...(Number(w.expiresAtMs) > 0 ? { expiresAtMs: Number(w.expiresAtMs) } : {}),
    ...(w.contentType ? { contentType: w.contentType } : {}),
    ...(w.signature?.length || w.signerCertificate?.length
      ? {
          signature: {
            certificate: Buffer.from(w.signerCertificate ?? []).toString('base64'),
            value: Buffer.from(w.signature ?? []).toString('base64'),
          },
        }
      : {}),
  };
}

/** PingResponse as protobuf-js sees it. */
export interface WirePing {
  nodeId: string;
  zone: string;
  region: string;
  sentAtMs: number;
  coordinateVec: number[];
  coordinateHeight: number;
  coordinateError: number;
  incarnation?: number;
  /** The responder's protocol range (`min-max`); empty or absent: 1.0. */
  protocol?: string;
  /** Ping only: the incarnation the responder knows of the caller; 0 or absent: none. */
  yourIncarnation?: number;
}

export function pingToWire(
  node: { id: string; zone: string; region: string },
  sentAtMs: number,
  c?: Coordinate,
  incarnation?: number,
): WirePing {
  return {
    incarnation: incarnation ?? 0,
    nodeId: node.id,
    zone: node.zone,
    region: node.region,
    sentAtMs,
    coordinateVec: c ? [...c.vec] : [],
    coordinateHeight: c?.height ?? 0,
    coordinateError: c?.error ?? 0,
  };
}

/** The coordinate in a ping answer, if it sent one (shape only; Vivaldi checks the values). */
export function pingCoordinate(w: WirePing): Coordinate | undefined {
  if (!w.coordinateVec?.length) return undefined;
  return {
    vec: w.coordinateVec.map(Number),
    height: Number(w.coordinateHeight),
    error: Number(w.coordinateError),
  };
}
