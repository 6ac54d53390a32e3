import { createHash, verify, X509Certificate } from 'node:crypto';
import { sameMesh, verifyNodeCertificate } from '@edgemesh/identity/node';
import { type Manifest, type NodeSignature, manifestSignedBytes } from '../cache/manifest.ts';
import type { NodeCredentials } from './node-credentials.ts';
import type { Revocations } from './revocations.ts';
import { MAX_CLOCK_SKEW_MS } from '../time/clock.ts';

/** Something no node of this mesh vouches for: unsigned, badly signed, or signed by a stranger. */
export class ManifestTrustError extends Error {
  override name = 'ManifestTrustError';
}

/**
 * Refused for who signed it, not for what the holder did: a certificate of a CA this node's bundle no
 * longer holds (a CA replaced after a compromise), or a node revoked since. An honest holder keeps
 * what it stored before, so serving it is no sign of a lie (PeerFetcher counts nothing against the
 * holder for it).
 */
export class StaleSignerError extends ManifestTrustError {
  override name = 'StaleSignerError';
}

/** The bytes a purge's signature covers: the key, the time, and the client that asked for it. */
export function purgeSignedBytes(key: string, purgedAtMs: number, by = ''): Buffer {
  return Buffer.from(JSON.stringify(['edgemesh.purge.v1', key, purgedAtMs, by]));
}

/**
 * What this node vouches for, signed with its node key, and the check of what peers send: a version
 * of an object (its manifest: a write this node accepted, an origin fetch it made) and a purge (a
 * DELETE it accepted). A signature is good when the signer's certificate chains to the mesh's trust
 * bundle and was valid at the time signed (the version's creation, the purge's time: it may have
 * ended since), names a node of this mesh that is not revoked, and its key signed exactly these
 * bytes; a time further ahead than the clock skew allowed is refused. Verdicts are remembered per
 * signature until the trust bundle changes.
 */
export class NodeSigner {
  readonly #credentials: NodeCredentials;
  readonly #revocations: Revocations | undefined;
  readonly #now: () => number;
  readonly #verified = new Map<string, string>();
  #trustSeen: readonly X509Certificate[] | undefined;

  constructor(credentials: NodeCredentials, opts: { revocations?: Revocations; now?: () => number } = {}) {
    this.#credentials = credentials;
    this.#revocations = opts.revocations;
    this.#now = opts.now ?? Date.now;
  }

  /** This node's signature over `manifest` (with its current certificate). */
  sign(manifest: Omit<Manifest, 'signature'>): NodeSignature {
    return this.#credentials.sign(manifestSignedBytes(manifest));
  }

  /** The node that vouches for `manifest`; throws ManifestTrustError when none of this mesh does. */
  verify(manifest: Manifest): string {
    const what = `the manifest of ${manifest.key}`;
    if (!manifest.signature) throw new ManifestTrustError(`${what} is not signed`);
    return this.#verify(manifestSignedBytes(manifest), manifest.signature, manifest.createdAtMs, what);
  }

  /** This node's signature over a purge of `key` at `purgedAtMs`, asked for by client `by`. */
  signPurge(key: string, purgedAtMs: number, by?: string): NodeSignature {
    return { ...this.#credentials.sign(purgeSignedBytes(key, purgedAtMs, by)), ...(by ? { by } : {}) };
  }

  /** The node that vouches for a purge; throws ManifestTrustError when none of this mesh does. */
  verifyPurge(key: string, purgedAtMs: number, signature: NodeSignature | undefined): string {
    const what = `the purge of ${key}`;
    if (!signature) throw new ManifestTrustError(`${what} is not signed`);
    return this.#verify(purgeSignedBytes(key, purgedAtMs, signature.by), signature, purgedAtMs, what);
  }

  #verify(bytes: Buffer, signature: NodeSignature, atMs: number, what: string): string {
    if (this.#trustSeen !== this.#credentials.trust) {
      this.#trustSeen = this.#credentials.trust; // a CA rotation: verdicts are made again
      this.#verified.clear();
    }
    // The verdict is for this certificate, this signature and these bytes together.
    const cacheKey = createHash('sha256')
      .update(signature.certificate)
      .update('|')
      .update(signature.value)
      .update('|')
      .update(bytes)
      .digest('base64');
    let node = this.#verified.get(cacheKey);
    if (node === undefined) {
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(Buffer.from(signature.certificate, 'base64'));
      } catch {
        throw new ManifestTrustError(`${what} carries no readable certificate`);
      }
      if (atMs > this.#now() + MAX_CLOCK_SKEW_MS)
        throw new ManifestTrustError(`${what} is dated in the future`);
      let identity;
      try {
        identity = verifyNodeCertificate(cert, this.#credentials.trust, atMs);
      } catch (error) {
        const message = `${what} is signed by no node of this mesh: ${(error as Error).message}`;
        // A node certificate valid when it signed, which no CA of the bundle signed: a version kept
        // from before the CA was replaced (or a forger's CA: refused all the same).
        const otherCa =
          !cert.ca &&
          Date.parse(cert.validFrom) <= atMs &&
          atMs <= Date.parse(cert.validTo) &&
          !this.#credentials.trust.some((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));
        throw otherCa ? new StaleSignerError(message) : new ManifestTrustError(message);
      }
      if (!sameMesh(identity.mesh, this.#credentials.mesh))
        throw new ManifestTrustError(`${what} is signed by another mesh's node`);
      if (!verify('sha256', bytes, cert.publicKey, Buffer.from(signature.value, 'base64')))
        throw new ManifestTrustError(`${what} does not match its signature`);
      node = identity.node;
      if (this.#verified.size >= 10_000) this.#verified.clear();
      this.#verified.set(cacheKey, node);
    }
    if (this.#revocations?.revoked(node))
      throw new StaleSignerError(`${what} is signed by ${node}, which is revoked`);
    return node;
  }
}
