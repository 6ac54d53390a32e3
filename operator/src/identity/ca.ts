import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

// The library takes a WebCrypto provider; Node's is the one (its types are node:crypto's own).
x509.cryptoProvider.set(webcrypto as never);
type CryptoKey = webcrypto.CryptoKey;

/** ECDSA P-256 with SHA-256, for the CA and for node keys (what Go's and Node's TLS both take). */
const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
/** A node certificate's default life; agents renew at two thirds of it. */
export const NODE_CERTIFICATE_TTL_MS = 24 * 3600_000;
/** A mesh CA's life; rotation with an overlapping bundle comes before it ends. */
export const CA_TTL_MS = 365 * 24 * 3600_000;
/** Certificates start this long before they are made, for clocks a little behind. */
const BACKDATE_MS = 5 * 60_000;

/** The SPIFFE-style identity a node certificate carries as its only URI SAN. */
export function nodeSpiffeId(meshId: string, node: string): string {
  return `spiffe://edgemesh.p2p.dev/mesh/${encodeURIComponent(meshId)}/node/${encodeURIComponent(node)}`;
}

/** A certificate request that cannot be signed: unreadable, not self-signed by its key, or not ECDSA P-256. */
export class CsrError extends Error {
  override name = 'CsrError';
}

/** A CA's certificate and private key (PKCS#8), both PEM: what the operator keeps in a Secret. */
export interface CaMaterial {
  certPem: string;
  keyPem: string;
}

const serial = () => {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f; // a positive integer
  return bytes.toString('hex');
};

/** Makes a new CA for one mesh. */
export async function createCa(meshId: string, now = new Date(), ttlMs = CA_TTL_MS): Promise<CaMaterial> {
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=EdgeMesh ${meshId} CA`,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + ttlMs),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: cert.toString('pem'), keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') };
}

/** A mesh's CA, loaded from its material, that signs node certificates. */
export class MeshCa {
  readonly certPem: string;
  readonly #cert: x509.X509Certificate;
  readonly #key: CryptoKey;

  private constructor(cert: x509.X509Certificate, key: CryptoKey) {
    this.#cert = cert;
    this.#key = key;
    this.certPem = cert.toString('pem');
  }

  static async load(material: CaMaterial): Promise<MeshCa> {
    const cert = new x509.X509Certificate(material.certPem);
    const der = x509.PemConverter.decodeFirst(material.keyPem);
    const key = await webcrypto.subtle.importKey('pkcs8', der, ALGORITHM, false, ['sign']);
    return new MeshCa(cert, key);
  }

  /**
   * Signs a node certificate for the public key of `csrPem` (which must be signed by that key, as
   * proof of possession). The identity comes from the caller, never from the request: subject
   * CN = node, one URI SAN (nodeSpiffeId), client and server authentication, `ttlMs` of life, and
   * never beyond the CA's own.
   */
  async issue(opts: {
    csrPem: string;
    meshId: string;
    node: string;
    ttlMs?: number;
    now?: Date;
  }): Promise<string> {
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(opts.csrPem);
    } catch (error) {
      throw new CsrError(`not a PEM certificate request: ${(error as Error).message}`, { cause: error });
    }
    const algorithm = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
    if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256')
      throw new CsrError(
        `the key must be ECDSA P-256, not ${algorithm.name} ${algorithm.namedCurve ?? ''}`.trim(),
      );
    if (!(await csr.verify())) throw new CsrError('the request is not signed by its own key');
    const now = opts.now ?? new Date();
    const notAfter = Math.min(
      now.getTime() + (opts.ttlMs ?? NODE_CERTIFICATE_TTL_MS),
      this.#cert.notAfter.getTime(),
    );
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `CN=${opts.node.replace(/[,+="\\<>;#]/g, '_')}`,
      issuer: this.#cert.subject,
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter: new Date(notAfter),
      signingKey: this.#key,
      publicKey: csr.publicKey,
      signingAlgorithm: ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]),
        new x509.SubjectAlternativeNameExtension(
          [{ type: 'url', value: nodeSpiffeId(opts.meshId, opts.node) }],
          true,
        ),
        await x509.AuthorityKeyIdentifierExtension.create(this.#cert),
      ],
    });
    return cert.toString('pem');
  }
}
