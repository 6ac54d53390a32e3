import { verify, X509Certificate } from 'node:crypto';
import { type MeshRef, type NodeIdentity, sameMesh } from './spiffe.ts';
import { verifyNodeCertificate } from './verify.ts';

/** Why a signature by a node was not accepted. */
export type SignerRefusal = 'unsigned' | 'unknown-sender' | 'bad-signature';

/**
 * Checks signatures made with node keys, each carried with its signer's certificate (base64 DER):
 * the certificate must be a node of `mesh` under the trust bundle of the moment and valid now, and
 * the signature over the exact bytes its own. A certificate is checked once per bundle and kept (at
 * most 10,000) until it ends. Used for control-plane events by the agents and the operator alike.
 */
export class NodeSigners {
  readonly #trust: () => readonly X509Certificate[];
  readonly #mesh: MeshRef;
  readonly #now: () => number;
  readonly #known = new Map<string, { identity: NodeIdentity; cert: X509Certificate; validToMs: number }>();
  #trustSeen: readonly X509Certificate[] | undefined;

  constructor(opts: { trust: () => readonly X509Certificate[]; mesh: MeshRef; now?: () => number }) {
    this.#trust = opts.trust;
    this.#mesh = opts.mesh;
    this.#now = opts.now ?? Date.now;
  }

  /** The node that signed `data`, or why it is not accepted. */
  check(
    data: Uint8Array,
    certificate: string | undefined,
    signature: string | undefined,
  ): { identity: NodeIdentity } | { refusal: SignerRefusal } {
    if (!certificate || !signature || certificate.length > 8192 || signature.length > 256)
      return { refusal: 'unsigned' };
    const now = this.#now();
    const trust = this.#trust();
    if (this.#trustSeen !== trust) {
      this.#trustSeen = trust; // a CA rotation: certificates are checked again
      this.#known.clear();
    }
    let signer = this.#known.get(certificate);
    if (!signer || signer.validToMs < now) {
      try {
        const cert = new X509Certificate(Buffer.from(certificate, 'base64'));
        signer = {
          identity: verifyNodeCertificate(cert, trust, now),
          cert,
          validToMs: Date.parse(cert.validTo),
        };
      } catch {
        return { refusal: 'unknown-sender' };
      }
      if (this.#known.size >= 10_000) this.#known.clear();
      this.#known.set(certificate, signer);
    }
    if (!sameMesh(signer.identity.mesh, this.#mesh)) return { refusal: 'unknown-sender' };
    if (!verify('sha256', data, signer.cert.publicKey, Buffer.from(signature, 'base64')))
      return { refusal: 'bad-signature' };
    return { identity: signer.identity };
  }
}
