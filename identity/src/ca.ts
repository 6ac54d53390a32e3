import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { fromPem, toPem } from './pem.ts';
import { type MeshRef, nodeSpiffeId } from './spiffe.ts';

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

/**
 * The DER in the PEM block `label` of `text`, which must be an ASN.1 SEQUENCE: @peculiar/x509 reads
 * anything else it is handed as text (PEM, hex or base64 again), which a block should never hold,
 * and some of it with a regular expression whose time grows with the square of the input.
 */
function derOf(text: string, label: string): Buffer {
  const der = fromPem(text, label);
  if (der[0] !== 0x30) throw new RangeError(`the PEM block "${label}" holds no DER (an ASN.1 SEQUENCE)`);
  return der;
}

/** Makes a new CA for one mesh. */
export async function createCa(mesh: MeshRef, now = new Date(), ttlMs = CA_TTL_MS): Promise<CaMaterial> {
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: [{ O: ['EdgeMesh'] }, { OU: [`namespace ${mesh.namespace}`] }, { CN: [`mesh ${mesh.name} CA`] }],
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
  return { certPem: toPem(cert.rawData, 'CERTIFICATE'), keyPem: toPem(pkcs8, 'PRIVATE KEY') };
}

/** A mesh's CA, loaded from its material, that signs node certificates. */
export class MeshCa {
  readonly certPem: string;
  readonly #cert: x509.X509Certificate;
  readonly #key: CryptoKey;

  private constructor(cert: x509.X509Certificate, key: CryptoKey) {
    this.#cert = cert;
    this.#key = key;
    this.certPem = toPem(cert.rawData, 'CERTIFICATE');
  }

  /** Loads a CA, refusing a certificate that is not a CA's or a key that is not its own. */
  static async load(material: CaMaterial): Promise<MeshCa> {
    const cert = new x509.X509Certificate(derOf(material.certPem, 'CERTIFICATE'));
    const der = fromPem(material.keyPem, 'PRIVATE KEY');
    const key = await webcrypto.subtle.importKey('pkcs8', der, ALGORITHM, false, ['sign']);
    const constraints = cert.getExtension(x509.BasicConstraintsExtension);
    const usages = cert.getExtension(x509.KeyUsagesExtension);
    if (!constraints?.ca || !usages || !(usages.usages & x509.KeyUsageFlags.keyCertSign))
      throw new Error('the CA certificate is not a CA (basicConstraints, keyCertSign)');
    const probe = new TextEncoder().encode('edgemesh CA key check');
    const signature = await webcrypto.subtle.sign(ALGORITHM, key, probe);
    const publicKey = await cert.publicKey.export(ALGORITHM, ['verify']);
    if (!(await webcrypto.subtle.verify(ALGORITHM, publicKey as CryptoKey, signature, probe)))
      throw new Error("the CA key is not the CA certificate's");
    return new MeshCa(cert, key);
  }

  /**
   * Reads a certificate request and checks it before anything else is spent on it: PEM, an ECDSA
   * P-256 key, signed with SHA-256 or better by that key (proof of possession).
   */
  static async readRequest(csrPem: unknown): Promise<x509.Pkcs10CertificateRequest> {
    if (typeof csrPem !== 'string' || !csrPem.includes('-----BEGIN CERTIFICATE REQUEST-----'))
      throw new CsrError('not a PEM certificate request');
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(derOf(csrPem, 'CERTIFICATE REQUEST'));
    } catch (error) {
      throw new CsrError(`not a PEM certificate request: ${(error as Error).message}`, { cause: error });
    }
    const algorithm = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
    if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256')
      throw new CsrError(
        `the key must be ECDSA P-256, not ${algorithm.name} ${algorithm.namedCurve ?? ''}`.trim(),
      );
    const hash = (csr.signatureAlgorithm as { hash?: { name?: string } }).hash?.name;
    if (!hash || !['SHA-256', 'SHA-384', 'SHA-512'].includes(hash))
      throw new CsrError(`the request must be signed with SHA-256 or better, not ${hash ?? 'unknown'}`);
    if (!(await csr.verify())) throw new CsrError('the request is not signed by its own key');
    return csr;
  }

  /**
   * Signs a node certificate for the public key of `csrPem` (checked by readRequest). The identity
   * comes from the caller, never from the request: one URI SAN (nodeSpiffeId), the node as CN where
   * it fits (64 characters), client and server authentication, `ttlMs` of life (at most
   * NODE_CERTIFICATE_TTL_MS), never outside the CA's own validity. A CA not valid now signs nothing.
   */
  async issue(opts: {
    csrPem: unknown;
    mesh: MeshRef;
    node: string;
    ttlMs?: number;
    now?: Date;
  }): Promise<string> {
    const csr = await MeshCa.readRequest(opts.csrPem);
    const now = opts.now ?? new Date();
    if (now < this.#cert.notBefore || now >= this.#cert.notAfter)
      throw new Error(
        `the mesh CA is not valid now (${this.#cert.notBefore.toISOString()} to ${this.#cert.notAfter.toISOString()})`,
      );
    const ttl = opts.ttlMs ?? NODE_CERTIFICATE_TTL_MS;
    if (!Number.isFinite(ttl) || ttl <= 0 || ttl > NODE_CERTIFICATE_TTL_MS)
      throw new RangeError(
        `a node certificate lives more than 0 and at most ${NODE_CERTIFICATE_TTL_MS} ms, not ${ttl}`,
      );
    const fitsCn = opts.node.length <= 64;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: fitsCn ? [{ CN: [opts.node] }] : [],
      issuer: this.#cert.subject,
      notBefore: new Date(Math.max(now.getTime() - BACKDATE_MS, this.#cert.notBefore.getTime())),
      notAfter: new Date(Math.min(now.getTime() + ttl, this.#cert.notAfter.getTime())),
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
        // Critical only when the subject is empty (RFC 5280, 4.2.1.6).
        new x509.SubjectAlternativeNameExtension(
          [{ type: 'url', value: nodeSpiffeId(opts.mesh, opts.node) }],
          !fitsCn,
        ),
        await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.#cert),
      ],
    });
    return toPem(cert.rawData, 'CERTIFICATE');
  }
}

/**
 * A self-signed serving certificate for `dnsNames` (the operator's issuance endpoint): clients trust
 * exactly this certificate (it is its own trust anchor), handed to them with the mesh's trust bundle.
 */
export async function createServingCertificate(
  dnsNames: readonly string[],
  now = new Date(),
  ttlMs = CA_TTL_MS,
): Promise<CaMaterial> {
  if (dnsNames.length === 0) throw new RangeError('a serving certificate names at least one host');
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: [{ O: ['EdgeMesh'] }, { CN: [dnsNames[0]!.slice(0, 64)] }],
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + ttlMs),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(dnsNames.map((value) => ({ type: 'dns' as const, value }))),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: toPem(cert.rawData, 'CERTIFICATE'), keyPem: toPem(pkcs8, 'PRIVATE KEY') };
}
