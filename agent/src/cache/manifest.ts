import {
  chunkCount,
  chunkLength,
  isDigest,
  MAX_CHUNK_SIZE,
  MAX_OBJECT_BYTES,
  MIN_CHUNK_SIZE,
  OBJECT_DIGEST_PREFIX,
  rootDigest,
} from './chunking.ts';
import { StoreError } from './errors.ts';

/** What the store knows about one object: its chunks, in order, and their root. */
export interface Manifest {
  readonly key: string;
  readonly size: number;
  readonly chunkSize: number;
  /** SHA-256 hex of each chunk, in order. */
  readonly chunks: readonly string[];
  /** rootDigest(size, chunkSize, chunks), hex. */
  readonly root: string;
  readonly createdAtMs: number;
  /** Absent: no expiry. */
  readonly expiresAtMs?: number;
  /** The media type given when it was stored; absent: unknown. */
  readonly contentType?: string;
  /**
   * Who vouches for this version: the node that accepted the write (or fetched it from the origin)
   * signed manifestSignedBytes with its node key. Absent only with mTLS off.
   */
  readonly signature?: NodeSignature;
}

/**
 * A node's signature (over a manifest, or a purge), with the certificate that proves its key is that
 * node's.
 */
export interface NodeSignature {
  /** The signing node's certificate, DER, base64. */
  readonly certificate: string;
  /** ECDSA P-256 / SHA-256 over the signed bytes (manifestSignedBytes, purgeSignedBytes), DER, base64. */
  readonly value: string;
  /** A purge's: the client that asked for it (`token:<name>`, a ServiceAccount, `anonymous`), signed too. */
  readonly by?: string;
}

/** A signature as it comes from a peer or a file: checked for shape and size, not yet verified. */
export function parseSignature(value: unknown): NodeSignature | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const sig = value as Record<string, unknown>;
  if (
    typeof sig.certificate !== 'string' ||
    typeof sig.value !== 'string' ||
    sig.value.length > MAX_SIGNATURE_B64 ||
    // One that passed these checks before is interned: every manifest one node signed carries it.
    (!interned.has(sig.certificate) &&
      (sig.certificate.length > MAX_CERTIFICATE_B64 || !BASE64.test(sig.certificate))) ||
    !BASE64.test(sig.value) ||
    (sig.by !== undefined && (typeof sig.by !== 'string' || sig.by.length > 320))
  )
    return undefined;
  return {
    certificate: interned.intern(sig.certificate),
    value: sig.value,
    ...(typeof sig.by === 'string' && sig.by ? { by: sig.by } : {}),
  };
}

/**
 * Strings kept once each, up to a budget: the least recently seen go first. Each is charged its
 * length and ENTRY_COST (its header and its place in the map, rounded up), so a flood of short ones
 * is held to the budget too. Past the budget it lets go of the least recently seen down to three
 * quarters of it in one pass: a map walked from its start once per insertion would step over every
 * entry deleted before, at a cost that grows with the flood.
 */
export class InternTable {
  static readonly ENTRY_COST = 256;
  readonly #budget: number;
  readonly #strings = new Map<string, string>();
  #bytes = 0;

  constructor(budgetBytes: number) {
    this.#budget = budgetBytes;
  }

  /** The copy of `text` kept here (it, if none was). */
  intern(text: string): string {
    const known = this.#strings.get(text);
    if (known !== undefined) {
      this.#strings.delete(known); // the most recently seen last
      this.#strings.set(known, known);
      return known;
    }
    this.#strings.set(text, text);
    this.#bytes += text.length + InternTable.ENTRY_COST;
    if (this.#bytes > this.#budget)
      for (const oldest of this.#strings.keys()) {
        this.#strings.delete(oldest);
        this.#bytes -= oldest.length + InternTable.ENTRY_COST;
        if (this.#bytes <= (this.#budget * 3) / 4) break;
      }
    return text;
  }

  has(text: string): boolean {
    return this.#strings.has(text);
  }
}

/**
 * Certificates kept once each: every manifest, tombstone and index entry a node signed carries the
 * same certificate (about 800 bytes), and each parse made a copy of its own (50,000 tombstones held
 * 40 MB of copies). Up to 4 MiB of them: certificates sent by anyone (this runs before any check)
 * cost at most that, and a mesh's own (a few thousand, with each node's renewals) stay shared
 * however many nodes sign (a table that started over once full shared nothing in a mesh of more
 * signers than it held).
 */
const interned = new InternTable(4 * 2 ** 20);

/** Sizes a signature's parts can have (a node certificate is about 600 bytes; an ECDSA signature at most 72). */
const MAX_CERTIFICATE_B64 = 8192;
const MAX_SIGNATURE_B64 = 256;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The bytes a manifest's signature covers: every field that says what the object is (the root
 * covers size, chunk size and every chunk digest), when it was made, until when, and as what.
 */
export function manifestSignedBytes(m: Omit<Manifest, 'signature' | 'chunks'>): Buffer {
  return Buffer.from(
    JSON.stringify([
      'edgemesh.manifest.v1',
      m.key,
      m.size,
      m.chunkSize,
      m.root,
      m.createdAtMs,
      m.expiresAtMs ?? 0,
      m.contentType ?? '',
    ]),
  );
}

const TOKEN = "[A-Za-z0-9!#$%&'*+.^_`|~-]+";
const MEDIA_TYPE = new RegExp(`^${TOKEN}/${TOKEN}(\\s*;\\s*${TOKEN}=(${TOKEN}|"[^"\\\\]*"))*$`);

/** A media type as RFC 9110 writes it (`type/subtype; param=value`), at most 255 characters. */
export function isMediaType(value: unknown): value is string {
  return typeof value === 'string' && value.length <= 255 && MEDIA_TYPE.test(value);
}

export class InvalidManifestError extends StoreError {
  override name = 'InvalidManifestError';
}

/** The object's public digest (ETag value without quotes). */
export function objectDigest(manifest: Pick<Manifest, 'root'>): string {
  return OBJECT_DIGEST_PREFIX + manifest.root;
}

export function manifestChunkLength(manifest: Manifest, index: number): number {
  return chunkLength(manifest.size, manifest.chunkSize, index);
}

/**
 * Checks an untrusted manifest (from disk or a peer) for internal consistency: field types, chunk count
 * matching size and chunk size, and the root matching the chunk list. Returns it typed, or throws.
 * Only what this code makes passes in size: chunks of MIN_CHUNK_SIZE to MAX_CHUNK_SIZE (smaller only
 * for an object of one chunk) and objects of at most MAX_OBJECT_BYTES, so a peer's manifest lists at
 * most MAX_CHUNKS digests (a 1-byte chunk size would let it list millions). The counts are checked
 * before any digest is.
 */
export function parseManifest(value: unknown, isKey: (key: string) => boolean): Manifest {
  const fail = (why: string): never => {
    throw new InvalidManifestError(`invalid manifest: ${why}`);
  };
  if (typeof value !== 'object' || value === null) return fail('not an object');
  const m = value as Record<string, unknown>;
  if (typeof m.key !== 'string' || !isKey(m.key)) return fail('bad key');
  if (!Number.isSafeInteger(m.size) || (m.size as number) < 0) return fail('bad size');
  if (!Number.isSafeInteger(m.chunkSize) || (m.chunkSize as number) <= 0) return fail('bad chunkSize');
  const size = m.size as number;
  const chunkSize = m.chunkSize as number;
  // A receiver sizes its buffers by chunkSize: a peer's manifest may not ask for more than any
  // manifest this code makes.
  if (chunkSize > MAX_CHUNK_SIZE) return fail(`chunkSize above ${MAX_CHUNK_SIZE}`);
  // Nor cut an object finer than any writer does (chunkSizeFor): an object of more than one chunk
  // has chunks of MIN_CHUNK_SIZE at least.
  if (chunkSize < MIN_CHUNK_SIZE && size > chunkSize)
    return fail(`chunkSize ${chunkSize} below ${MIN_CHUNK_SIZE} for an object of more than one chunk`);
  if (size > MAX_OBJECT_BYTES) return fail(`size ${size} above the largest object, ${MAX_OBJECT_BYTES}`);
  if (!Array.isArray(m.chunks)) return fail('bad chunk list');
  if (m.chunks.length > chunkCount(MAX_OBJECT_BYTES, chunkSize))
    return fail(`${m.chunks.length} chunks: more than an object of ${MAX_OBJECT_BYTES} bytes has`);
  if (m.chunks.length !== chunkCount(size, chunkSize)) return fail('chunk count does not match size');
  if (!m.chunks.every(isDigest)) return fail('bad chunk list');
  if (!isDigest(m.root) || m.root !== rootDigest(size, chunkSize, m.chunks)) return fail('root mismatch');
  if (!Number.isSafeInteger(m.createdAtMs)) return fail('bad createdAtMs');
  if (m.expiresAtMs !== undefined && !Number.isSafeInteger(m.expiresAtMs)) return fail('bad expiresAtMs');
  if (m.contentType !== undefined && !isMediaType(m.contentType)) return fail('bad contentType');
  const signature = m.signature === undefined ? undefined : parseSignature(m.signature);
  if (m.signature !== undefined && !signature) return fail('bad signature');
  return {
    key: m.key,
    size,
    chunkSize,
    chunks: m.chunks,
    root: m.root,
    createdAtMs: m.createdAtMs as number,
    ...(m.expiresAtMs === undefined ? {} : { expiresAtMs: m.expiresAtMs as number }),
    ...(m.contentType === undefined ? {} : { contentType: m.contentType }),
    ...(signature ? { signature } : {}),
  };
}
